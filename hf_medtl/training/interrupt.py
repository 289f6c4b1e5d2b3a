"""Ctrl-C (SIGINT) or SIGTERM while training: the epoch under way finishes, its end is decided as usual (evaluation,
the schedule, EMA/SWA), a resumable checkpoint of that epoch is saved, and the run stops with the command that
resumes it. A second signal stops at once, as before (KeyboardInterrupt). Without this, a run with the default
save_strategy "no" lost everything on Ctrl-C.

The request is summed over the processes at the epoch's end, so that every rank of a multi-process launch stops
after the same epoch (a rank that stopped alone would leave the others waiting in a collective)."""
from __future__ import annotations

import logging
import signal
import threading

import torch
from transformers import TrainerCallback

from hf_medtl.errors import HfMedtlError
from hf_medtl.training.callbacks import sum_over_processes

logger = logging.getLogger("hf_medtl")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(HfMedtlError):
    """Training stopped on a signal after a saved epoch: ``checkpoint`` resumes it."""

    def __init__(self, epoch: int, checkpoint: str):
        self.epoch, self.checkpoint = epoch, checkpoint
        super().__init__(f"interrupted: epoch {epoch} finished and saved in {checkpoint}")


class EpochEndInterrupt(TrainerCallback):
    """Turns a SIGINT/SIGTERM into 'save this epoch and stop' at the next epoch end (see the module)."""

    def __init__(self):
        self.requested = False
        self.stopped_after = None  # (epoch, checkpoint) once it has stopped training
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            self.restore()
            raise KeyboardInterrupt
        self.requested = True
        logger.warning(f"{signal.Signals(signum).name}: finishing this epoch, then saving a checkpoint to resume "
                       "from (signal again to stop at once)")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if "eval_loss" not in (metrics or {}):
            return  # not an epoch end
        flag = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
        if sum_over_processes(flag).item() > 0 and not control.should_training_stop:
            control.should_save = True  # the Trainer saves right after this evaluation: this epoch, decided
            control.should_training_stop = True
            self.stopped_after = (round(state.epoch or 0), f"{args.output_dir}/checkpoint-{state.global_step}")


def resumed_line(checkpoint, callback) -> str:
    """What a resumed run starts from, in one line: the epochs done, the learning rate, the schedule's state."""
    history = callback.history
    if not history:
        return f"resuming from {checkpoint}: no epoch finished yet"
    last = history[-1]
    state = ", ".join(f"{k} {last[k]}" for k in ("monitor", "lr_scale", "wait", "reductions") if k in last)
    return (f"resuming from {checkpoint}: {len(history)} epoch(s) done, learning rate {last['lr']:.3e}"
            + (f", schedule: {state}" if state else "") + f", θ* epoch {callback.theta.epoch}")
