"""Algorithm 1 of Khoa & Tri (seed 000) as a pure state machine: numbers in, decisions out, no torch.

The contract, with a worked trace, is docs/adaptive-lr.md. Where the paper's pseudocode and prose disagree,
the prose wins: the best training accuracy is compared *before* it is updated.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hf_medtl.config.validation import check_schedule

TRAIN_ACCURACY = "train_accuracy"
VAL_LOSS = "val_loss"


@dataclass(frozen=True)
class Decision:
    """What the schedule decided at the end of one epoch (the columns of the worked trace)."""

    monitor: str
    improved: bool
    save_best: bool
    reduced: bool
    lr_scale: float
    wait: int
    reductions: int
    stop: bool


@dataclass
class ScheduleState:
    best_train_acc: float = 0.0
    best_val_loss_in_acc_phase: float = math.inf
    best_val_loss: float = math.inf
    wait: int = 0
    reductions: int = 0
    lr_scale: float = 1.0
    epochs: int = 0


class AdaptiveSchedule:
    """Threshold-switched monitoring with LR reduction and early stop.

    Below ``threshold`` training accuracy is monitored, at or above it validation loss. After ``patience``
    epochs without improvement the LR is multiplied by ``factor``; after ``stop_patience`` reductions training
    stops.
    """

    def __init__(self, threshold: float = 0.9, patience: int = 2, stop_patience: int = 2, factor: float = 0.5):
        check_schedule(threshold, patience, stop_patience, factor)  # the recipe's own rule (config/validation.py)
        self.threshold, self.patience, self.stop_patience, self.factor = threshold, patience, stop_patience, factor
        self.state = ScheduleState()

    @classmethod
    def from_arguments(cls, s) -> "AdaptiveSchedule | None":
        """The schedule a recipe's ScheduleArguments ``s`` asks for; None with adaptive_lr false."""
        return cls(s.threshold, s.patience, s.stop_patience, s.factor) if s.adaptive_lr else None

    def step(self, train_accuracy: float, val_loss: float) -> Decision:
        """Apply rules a-c for one finished epoch and return the decision."""
        s, acc, loss = self.state, float(train_accuracy), float(val_loss)
        s.epochs += 1
        save_best = False
        if acc < self.threshold:  # rule a
            monitor = TRAIN_ACCURACY
            improved = acc > s.best_train_acc
            if improved:
                s.best_train_acc = acc
                if loss < s.best_val_loss_in_acc_phase:
                    s.best_val_loss_in_acc_phase = loss
                    save_best = True
        else:  # rule b
            monitor = VAL_LOSS
            s.best_train_acc = max(s.best_train_acc, acc)
            improved = loss < s.best_val_loss
            if improved:
                s.best_val_loss = loss
                save_best = True
        s.wait = 0 if improved else s.wait + 1
        reduced = not improved and s.wait >= self.patience  # rule c
        if reduced:
            s.lr_scale *= self.factor
            s.wait = 0
            s.reductions += 1
        return Decision(monitor, improved, save_best, reduced, s.lr_scale, s.wait, s.reductions,
                        stop=s.reductions >= self.stop_patience)

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = ScheduleState(**state)
