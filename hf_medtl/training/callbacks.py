"""Trainer glue for the adaptive schedule: measure each epoch, hand the numbers to AdaptiveSchedule, apply
its decisions (LR scale, θ* snapshot, stop). The decision logic itself lives in hf_medtl/training/schedule.py."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from hf_medtl.console import EPOCH_HEADER, epoch_row
from hf_medtl.errors import HfMedtlError
from hf_medtl.outputs import STATE_FILE, atomic_write_text
from hf_medtl.training.progress import EpochClock
from hf_medtl.training.schedule import AdaptiveSchedule
from hf_medtl.training.theta import ThetaStar

logger = logging.getLogger("hf_medtl")


def sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    """Sum across all ranks, so that every process computes the same accuracy and takes the same decision."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values


def scale_lr(optimizer, lr_scheduler, factor: float) -> None:
    """Multiply the LR of every param group, and the scheduler's base LRs so that its next step keeps it."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


def head_lr(optimizer) -> float:
    """The LR of the head's group (discriminative LRs give the backbone's groups their own multiples)."""
    groups = optimizer.param_groups
    return next((g["lr"] for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0]["lr"])


class StrategyCallback(TrainerCallback):
    """Sets which parameters train at the start of every epoch, as the fine-tuning strategy says (gradual
    unfreezing at the listed epochs; a resumed run starts with the stages its epoch has). Logs each change."""

    def __init__(self, model_args):
        self.model_args = model_args
        self._trainable: Optional[int] = None

    def _apply(self, state, model) -> None:
        from hf_medtl.models import apply_strategy

        epoch = int(round(state.epoch or 0)) + 1
        n = apply_strategy(model, self.model_args, epoch)
        if n != self._trainable:
            total = sum(p.numel() for p in model.parameters())
            logger.info(f"epoch {epoch}: {n:,} of {total:,} parameters train ({self.model_args.finetune_strategy})")
        self._trainable = n

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)


class RunningAccuracy:
    """The training loss and accuracy of the epoch under way, summed batch by batch as training runs (told by the
    adaptive callback's forward hook, or by the loss function when the Trainer keeps labels out of the forward)."""

    def __init__(self):
        self.sums: Optional[torch.Tensor] = None  # loss * n, correct, n over this epoch's training batches

    def reset(self) -> None:
        self.sums = None

    def count(self, logits: torch.Tensor, labels: torch.Tensor, soft: bool = False) -> None:
        """Add one training batch. Multi-label (0/1 rows): BCE averaged over labels, and accuracy as the mean
        per-label accuracy at probability 0.5. ``soft`` (MixUp / CutMix rows of class probabilities): cross-entropy
        against them; correct when the prediction is the row's largest."""
        with torch.no_grad():
            # Our own sum, not output.loss: the Trainer may have the model divide by a cross-process count.
            logits = logits.detach().float()
            if soft:
                loss_sum = torch.nn.functional.cross_entropy(logits, labels.float(), reduction="sum")
                correct = (logits.argmax(-1) == labels.argmax(-1)).sum()
            elif labels.shape == logits.shape and labels.ndim == 2:
                target = labels.float()
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
                loss_sum = bce.mean(1).sum()
                correct = ((logits > 0) == (target > 0.5)).double().mean(1).sum()
            else:
                loss_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
                correct = (logits.argmax(-1) == labels).sum()
            # Everything stays on the device: no .item(), no host-to-device copy, so no per-step synchronisation.
            n = torch.full((), labels.shape[0], dtype=torch.float64, device=labels.device)
            batch = torch.stack([loss_sum.double(), correct.double(), n])
            self.sums = batch if self.sums is None else self.sums + batch

    def totals(self, device) -> tuple[float, float]:
        """(loss, accuracy) of the epoch over all processes."""
        sums = sum_over_processes(self.sums if self.sums is not None else torch.zeros(3, dtype=torch.float64, device=device))
        loss_sum, correct, n = sums.tolist()
        if n == 0:
            raise RuntimeError("no labelled training batch reached the model's forward; use train_accuracy 'full'")
        return loss_sum / n, correct / n


class AdaptiveLRCallback(TrainerCallback):
    """Applies the adaptive schedule at the end of every epoch (after that epoch's validation pass).

    Training accuracy is ``running`` (counted by a forward hook during the training pass: no extra forward)
    or ``full`` (``evaluate_train()`` runs an eval-mode pass over the training set and returns loss and
    accuracy). With ``schedule=None`` the callback only records the per-epoch history.

    ``theta`` (training/theta.py) owns θ*, the weights the run ends with: this callback offers it each epoch's
    weights (Algorithm 1 keeps them itself under the ``schedule`` rule) and restores it when training ends.
    ``running`` counts the training batches (shared with the loss function, which tells it when the Trainer keeps
    labels out of the forward); ``loss_terms()`` adds the loss's per-epoch terms (feature penalties) to each epoch;
    ``log`` is Trainer.log, so that trackers see the decisions; ``recipe_json`` goes into each checkpoint.
    """

    def __init__(self, schedule: Optional[AdaptiveSchedule], train_accuracy: str = "running",
                 evaluate_train: Optional[Callable[[], tuple[float, float]]] = None, theta: Optional[ThetaStar] = None,
                 running: Optional[RunningAccuracy] = None, loss_terms: Optional[Callable[[], dict]] = None,
                 log: Optional[Callable[[dict], None]] = None, recipe_json: Optional[str] = None):
        if train_accuracy not in ("running", "full"):
            raise ValueError(f"train_accuracy must be 'running' or 'full', got {train_accuracy!r}")
        self.schedule, self.mode, self.evaluate_train = schedule, train_accuracy, evaluate_train
        self.theta = theta if theta is not None else ThetaStar()
        self.running = running if running is not None else RunningAccuracy()
        self.loss_terms, self.log, self.recipe_json = loss_terms, log, recipe_json
        self.history: list[dict] = []
        # Callbacks whose state goes into each checkpoint with the schedule's (save_state / load_state), written before
        # the schedule's state file, which marks the checkpoint complete: SWA's window (training/swa.py), the
        # EMA's average (training/ema.py).
        self.companions: list = []
        self._hook = None
        self.clock = EpochClock()  # the epoch row's time and ETA

    # -- measuring -------------------------------------------------------------------------------------------
    def _count(self, module, args, kwargs, output):
        labels = kwargs.get("labels")
        if module.training and labels is not None:
            self.running.count(output.logits, labels)

    def _train_loss_accuracy(self, device) -> tuple[float, float]:
        return self.evaluate_train() if self.mode == "full" else self.running.totals(device)

    # -- Trainer events --------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.mode == "full" and self.evaluate_train is None:
            raise ValueError("train_accuracy 'full' needs evaluate_train")
        self._hook = model.register_forward_hook(self._count, with_kwargs=True)

    def restart(self, schedule: Optional[AdaptiveSchedule]) -> None:
        """A fresh run on the same Trainer (a search's next trial): its own schedule, history and θ*."""
        self.schedule, self.history = schedule, []
        self.theta.reset()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.running.reset()
        self.clock.start()

    def on_evaluate(self, args, state, control, metrics=None, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if self._hook is None or "eval_loss" not in (metrics or {}):
            return  # an evaluation outside training (e.g. the test set), not an epoch end
        train_loss, train_acc = self._train_loss_accuracy(args.device)
        require_finite(len(self.history) + 1, train_loss, metrics["eval_loss"], args.learning_rate)
        record = {"epoch": len(self.history) + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                  "train_accuracy_mode": self.mode, "val_loss": metrics["eval_loss"],
                  "val_accuracy": metrics.get("eval_accuracy"), **single_label_scores(metrics),
                  "lr": head_lr(optimizer),
                  "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        if self.loss_terms is not None:
            record.update(self.loss_terms())
        if self.schedule is not None:
            decision = self.schedule.step(train_acc, metrics["eval_loss"])
            record.update(dataclasses.asdict(decision))
        if self.theta.rule != "schedule":
            record["save_best"] = self.theta.wins(record)
        if record.get("save_best"):  # this epoch's own weights
            self.theta.keep(record["epoch"], model.state_dict(), "last" if self.theta.rule == "last" else "best")
        if self.schedule is not None and decision.reduced:
            scale_lr(optimizer, lr_scheduler, self.schedule.factor)
        if self.schedule is not None and decision.stop:
            control.should_training_stop = True
        self.history.append(record)
        if self.log is not None:
            self.log(tracker_values(record))
        if record["epoch"] == 1:
            logger.info(EPOCH_HEADER)
        timing = self.clock.lap(record["epoch"], state.num_train_epochs, control.should_training_stop, args.device)
        logger.info(epoch_row(record, timing))  # the main process's; every rank's with HF_MEDTL_LOG_ALL_RANKS=1

    def on_save(self, args, state, control, **kwargs):
        """Put the schedule's whole state (counters, bests, LR scale, history, θ*) beside the Trainer's."""
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        theta = self.theta.save(checkpoint)
        for companion in self.companions:
            companion.save_state(checkpoint)
        state_json = {"schedule": self.schedule.state_dict() if self.schedule else None, "history": self.history,
                      **theta}
        if self.recipe_json is not None:  # which recipe wrote it: a resume by another is refused (outputs.py)
            atomic_write_text(checkpoint / "recipe.json", self.recipe_json)
        atomic_write_text(checkpoint / STATE_FILE, json.dumps(state_json))

    def load_checkpoint(self, checkpoint: str | Path) -> None:
        """Restore what on_save wrote, before ``trainer.train(resume_from_checkpoint=checkpoint)``."""
        checkpoint = Path(checkpoint)
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        if self.schedule is not None and saved["schedule"] is not None:
            self.schedule.load_state_dict(saved["schedule"])
        self.history = saved["history"]
        self.theta.load(checkpoint, saved)
        for companion in self.companions:
            companion.load_state(checkpoint)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.theta.restore(model)  # θ*: what the run ends with and saves (SWA may still replace it)


def single_label_scores(metrics: dict) -> dict:
    """Balanced accuracy and macro F1 on validation (single-label runs), for the θ* rules that follow them."""
    return {f"val_{k}": metrics[f"eval_{k}"] for k in ("balanced_accuracy", "f1_macro") if f"eval_{k}" in metrics}


def require_finite(epoch: int, train_loss: float, val_loss: float, learning_rate: float) -> None:
    """Stop a diverged run at the end of the epoch it diverged in: once a loss is NaN or infinite the weights are
    too, and the run would go on to save a model and metrics that look complete. Raised inside trainer.train(),
    before this epoch's checkpoint and before anything is committed to output_dir. Every rank sees the same losses
    (summed and gathered across processes), so every rank stops."""
    bad = [f"{name} loss {value}" for name, value in (("training", train_loss), ("validation", val_loss))
           if value is not None and not math.isfinite(value)]
    if bad:
        raise HfMedtlError(f"epoch {epoch}: {' and '.join(bad)}: training diverged, no model was saved; lower "
                           f"learning_rate (this run: {learning_rate:g}), or check the backbone's weights for NaN")


def tracker_values(r: dict) -> dict:
    """The schedule's per-epoch state as scalars for report_to (tensorboard, trackio)."""
    keys = ("train_accuracy", "lr_scale", "wait", "reductions", "save_best", "reduced", "trainable_params",
            "train_l1_feature_reg", "train_l2_feature_reg")
    out = {f"schedule/{k}": float(r[k]) for k in keys if k in r}
    if "monitor" in r:
        out["schedule/monitoring_val_loss"] = float(r["monitor"] == "val_loss")
    return out
