"""Progress while a run trains: a bar over each epoch's steps on the main process, and each epoch's wall time with
an estimate of the time left for the epoch rows. The Trainer's own bar (one over the whole run, which prints raw
log dicts between its updates) stays off: build_trainer hands the Trainer disable_tqdm true."""
from __future__ import annotations

import sys
import time
from typing import Optional

import torch
import torch.distributed as dist
from transformers import TrainerCallback


def steps_per_epoch(train_dataloader, args, state) -> int:
    """Optimiser steps in one epoch, as the Trainer counts them (the last partial accumulation is a step too)."""
    try:
        batches = len(train_dataloader)
    except TypeError:  # no length (an iterable dataset): the Trainer then runs max_steps as one long epoch
        return max(state.max_steps, 1)
    accumulate = max(args.gradient_accumulation_steps, 1)
    return max(batches // accumulate + int(batches % accumulate > 0), 1)


class EpochProgressBar(TrainerCallback):
    """A tqdm bar over one epoch's optimiser steps, on stderr, on the main process only. It closes at the epoch's
    end, before validation, and leaves no line behind, so the epoch row is printed where the bar was.
    ``enabled`` false (recipe key disable_tqdm true): no bar."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self._step = 0

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not (self.enabled and state.is_world_process_zero):
            return
        from tqdm.auto import tqdm

        total = steps_per_epoch(train_dataloader, args, state)
        done_epochs = int((state.epoch or 0) + 1e-6)
        # A run resumed mid-epoch starts where its checkpoint was, not at 0.
        initial = min(max(state.global_step - done_epochs * total, 0), total)
        self.close()
        # Into a log file (not a terminal) a frame every 10 s, not every 0.1 s: megabytes per epoch otherwise.
        self.bar = tqdm(total=total, initial=initial, desc=f"epoch {done_epochs + 1}/{state.num_train_epochs}",
                        unit="step", file=sys.stderr, leave=False, dynamic_ncols=True,
                        mininterval=0.1 if getattr(sys.stderr, "isatty", lambda: False)() else 10.0)
        self._step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self._step)
            self._step = state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        self.close()

    def on_train_end(self, args, state, control, **kwargs):
        self.close()  # a run stopped inside an epoch (max_steps) never reaches on_epoch_end

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochPhases(TrainerCallback):
    """The run's phase clock (hf_medtl/timings.py) through training: ``first_epoch`` from train begin to the second
    epoch's beginning (its steps, loader start-up, validation, checkpoint), then ``later_epochs`` to train end; what
    the Trainer does before train begin (optimizer, accelerate's preparation) and after stays the enclosing
    phase's. Listed first, so that the other callbacks' train-begin work counts in the first epoch."""

    def __init__(self):
        self.epochs = 0

    def on_train_begin(self, args, state, control, **kwargs):
        from hf_medtl import timings

        self.epochs = 0
        timings.enter("first_epoch")

    def on_epoch_begin(self, args, state, control, **kwargs):
        from hf_medtl import timings

        self.epochs += 1
        if self.epochs == 2:
            timings.swap("later_epochs")

    def on_train_end(self, args, state, control, **kwargs):
        from hf_medtl import timings

        timings.leave("later_epochs" if self.epochs >= 2 else "first_epoch")


def slowest_rank(seconds: float, device) -> float:
    """The largest of every rank's ``seconds``: the epoch lasts until its slowest process is done, and every rank
    then prints the same row (multi-process runs are checked by comparing the ranks' rows)."""
    if not (dist.is_available() and dist.is_initialized()):
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


class EpochClock:
    """Times each epoch, training and validation together, from ``start()`` (at the epoch's beginning) to ``lap()``
    (where its row is printed). Every rank must call lap(): it agrees on the time across processes."""

    def __init__(self):
        self._started: Optional[float] = None

    def start(self) -> None:
        self._started = time.monotonic()

    def lap(self, epoch: int, num_epochs: int, stopping: bool, device) -> tuple[float, Optional[float]]:
        """(this epoch's seconds, seconds the remaining epochs up to ``num_epochs`` take at its pace, or None when
        none remain). An upper bound: the schedule may stop the run sooner."""
        now = time.monotonic()
        seconds = slowest_rank(now - (self._started if self._started is not None else now), device)
        left = 0 if stopping else max(int(num_epochs) - epoch, 0)
        return seconds, seconds * left if left else None
