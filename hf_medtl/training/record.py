"""What training hands on to the rest of the run: one typed record, built once training has ended (``Training``,
the Trainer that build_trainer wires and the callbacks whose results make it; or the k-NN fit, training/knn.py).
stages.summary reads its fields into metrics.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hf_medtl.training.theta import SOURCES


@dataclass(frozen=True)
class TrainingRecord:
    """``history``: one dict per epoch (history.json). ``best_epoch`` / ``theta_source``: the epoch of the weights
    the model ends with and where they came from (training/theta.py SOURCES; best_epoch None: the last weights, no
    epoch kept). ``budget``: how the epoch count was chosen (training/budget.py), None for k-NN. ``train_metrics``:
    the Trainer's train() metrics (train_runtime...). ``memory``: training's peak memory (training/memory.py
    PeakMemory.record()). ``swa``: SWA's average and whether it was kept (training/swa.py). ``knn``: the k and
    metric chosen, and why (training/knn.py)."""

    history: list = field(default_factory=list)
    best_epoch: Optional[int] = None
    theta_source: str = "last"
    budget: Optional[dict] = None
    train_metrics: dict = field(default_factory=dict)
    memory: Optional[dict] = None
    swa: Optional[dict] = None
    knn: Optional[dict] = None

    def __post_init__(self):
        if self.theta_source not in SOURCES:
            raise ValueError(f"theta_source must be one of {SOURCES}, got {self.theta_source!r}")

    @property
    def train_runtime_s(self) -> float:
        return self.train_metrics["train_runtime"]


@dataclass
class Training:
    """A Trainer wired for a run (hf_medtl.training.trainer.build_trainer), and the callbacks whose results make
    the run's record once it has trained."""

    trainer: object  # transformers Trainer
    adaptive: object  # AdaptiveLRCallback: the schedule, the history, θ* (adaptive.theta), checkpoints and resume
    budget: object  # training/budget.py Budget
    memory: object  # training/memory.py PeakMemoryCallback
    interrupt: object  # training/interrupt.py EpochEndInterrupt: Ctrl-C / SIGTERM, this epoch saved, then a stop
    swa: object = None  # training/swa.py SwaCallback, with swa_epochs

    def record(self, train_metrics: dict) -> TrainingRecord:
        theta = self.adaptive.theta
        return TrainingRecord(history=self.adaptive.history, best_epoch=theta.epoch, theta_source=theta.origin,
                              budget=self.budget.as_dict(), train_metrics=train_metrics, memory=self.memory.record(),
                              swa=self.swa.entry if self.swa is not None else None)
