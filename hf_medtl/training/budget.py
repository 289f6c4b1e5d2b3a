"""The run's budget: how many epochs it trains. A budget in optimiser steps (min_train_steps) is turned into epochs
before the Trainer is built, so that the LR schedule spans them; a wall-clock budget (time_budget_minutes) is sized
from the first epoch's measured time and stops the run at the end of the last epoch that fits."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Optional

from transformers import TrainerCallback

from hf_medtl.training.progress import slowest_rank

logger = logging.getLogger("hf_medtl")
clock = time.monotonic  # module-level, so that a test can stand in a deterministic clock


def steps_per_epoch(n_train: int, args, drop_last: bool) -> int:
    """Optimiser steps in one epoch, as the Trainer counts them: batches over all processes, then gradient
    accumulation (a partial accumulation at the epoch's end still steps)."""
    per_step = args.per_device_train_batch_size * max(args.world_size, 1)
    batches = n_train // per_step if drop_last else math.ceil(n_train / per_step)
    accumulate = max(args.gradient_accumulation_steps, 1)
    return max(math.ceil(batches / accumulate), 1)


@dataclass
class Budget:
    """How the epoch count was chosen: the metrics' ``budget`` entry (``as_dict``). ``epochs`` is what the Trainer
    gets; the time budget, when there is one, adds what its first epoch measured and whether it stopped the run."""

    num_train_epochs: float
    steps_per_epoch: int
    epochs: float
    chosen_by: str
    min_train_steps: Optional[int]
    time_budget_minutes: Optional[float]
    first_epoch_s: Optional[float] = None
    time_budget_epochs: Optional[int] = None
    stopped_by: Optional[str] = None

    def as_dict(self) -> dict:
        """The entry; the time budget's keys only once it has measured (or stopped) something."""
        late = ("first_epoch_s", "time_budget_epochs", "stopped_by")
        return {k: v for k, v in asdict(self).items() if k not in late or v is not None}


def plan_epochs(schedule, args, n_train: int, drop_last: bool) -> Budget:
    """How the epoch count is chosen: the recipe's num_train_epochs, or more when min_train_steps asks for it."""
    steps = steps_per_epoch(n_train, args, drop_last)
    budget = Budget(args.num_train_epochs, steps, args.num_train_epochs, "num_train_epochs", schedule.min_train_steps,
                    schedule.time_budget_minutes)
    if schedule.min_train_steps is not None:
        needed = math.ceil(schedule.min_train_steps / steps)
        if needed > args.num_train_epochs:
            budget.epochs, budget.chosen_by = float(needed), "min_train_steps"
        logger.info(f"budget: {budget.epochs:g} epochs = max(num_train_epochs {args.num_train_epochs:g}, "
                    f"ceil(min_train_steps {schedule.min_train_steps} / {steps} steps per epoch))")
    return budget


class TimeBudgetCallback(TrainerCallback):
    """Sizes the run from its first epoch (training, validation and the EMA's validation: placed after the other
    epoch-end callbacks) and stops it at the end of the last epoch that fits in ``minutes``. Every rank takes the
    slowest rank's time, so that all stop together. It writes what it measured and decided into ``budget``."""

    def __init__(self, minutes: float, budget: Budget):
        self.seconds, self.budget = minutes * 60.0, budget
        self.epochs_allowed = None
        self._started = None
        self._epochs = self._done = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run has its checkpoint's epochs behind it: the budget sizes what is left (of this invocation).
        self._started, self._epochs, self._done = clock(), 0, int((state.epoch or 0) + 1e-6)

    def on_train_end(self, args, state, control, **kwargs):
        self._started = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._started is None or "eval_loss" not in (metrics or {}):
            return  # outside training, or the EMA's own validation pass
        self._epochs += 1
        if self.epochs_allowed is None:
            first = slowest_rank(clock() - self._started, args.device)
            planned = int(state.num_train_epochs)
            self.epochs_allowed = min(self._done + max(int(self.seconds // max(first, 1e-9)), 1), planned)
            self.budget.first_epoch_s, self.budget.time_budget_epochs = round(first, 3), self.epochs_allowed
            logger.info(f"time budget {self.seconds / 60:g} min: the first epoch took {first:.1f} s, so the run "
                        f"trains at most {self.epochs_allowed} of {planned} epochs")
        epoch = self._done + self._epochs
        if epoch >= self.epochs_allowed and not control.should_training_stop:
            control.should_training_stop = True
            if epoch < int(state.num_train_epochs):
                self.budget.stopped_by = "time_budget"
                logger.info(f"time budget: stopping after epoch {epoch}")
