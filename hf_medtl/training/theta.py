"""θ*: the weights a run ends with, and where they came from. One owner decides: the adaptive callback offers each
epoch's live weights (or Algorithm 1 keeps them), the EMA offers its average at each epoch's end, SWA its average
when training ends; ``ThetaStar`` compares each offer under the run's rule, keeps the winner (a CPU copy) and puts
it into the model (``restore``). It is saved in every checkpoint, so that a resumed run ends with what the
uninterrupted one would."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from hf_medtl.outputs import BEST_FILE

THETA_STAR = ("schedule", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_f1_macro", "last")
# θ* rules that compare validation scores: only under these can the averaged weights compete with the live ones.
SCORED_RULES = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_f1_macro")
# Where θ* came from: the last weights trained (no epoch was kept, or the rule is 'last'), an epoch's live weights
# kept by the rule ('best'), the weights' EMA ('ema') or SWA's average ('swa').
SOURCES = ("last", "best", "ema", "swa")


def cpu_copy(state: dict) -> dict:
    """A state dict's tensors copied to the CPU (θ*, the EMA's and SWA's weights); contiguous: a channels-last model's
    weights are saved (safetensors) in the standard layout."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


class ThetaStar:
    """``rule``: ``schedule`` (Algorithm 1's θ* saves; none without a schedule: the last weights), or, over the whole
    run, the lowest validation loss (``val_loss``), the highest validation accuracy / balanced accuracy / macro F1,
    ties to the lower loss, or the last epoch (``last``)."""

    def __init__(self, rule: str = "schedule"):
        if rule not in THETA_STAR:
            raise ValueError(f"theta_star must be one of {THETA_STAR}, got {rule!r}")
        self.rule = rule
        self.reset()

    def reset(self) -> None:
        """Nothing kept (a search's next trial starts afresh)."""
        self.weights: Optional[dict] = None  # the kept weights (CPU), None: the model's own last weights
        self.epoch: Optional[int] = None
        self.key: Optional[list[float]] = None  # the rule's best (key, lower is better) so far
        self.source: Optional[str] = None

    @property
    def scored(self) -> bool:
        """Whether the rule compares validation scores (so that an average can compete)."""
        return self.rule in SCORED_RULES

    @property
    def origin(self) -> str:
        """The source of the weights the model ends with (SOURCES)."""
        return self.source or "last"

    def wins(self, candidate: dict) -> bool:
        """Whether ``candidate`` ({epoch, val_loss, val_accuracy...}) beats θ* so far under the rule (not the
        schedule's: that decides by itself); a win becomes the best so far."""
        if self.rule == "last":
            return True
        loss = candidate["val_loss"]
        # A score rule (accuracy, balanced accuracy, macro F1) ties to the lower validation loss.
        key = [loss] if self.rule == "val_loss" else [-(candidate.get(self.rule) or 0.0), loss]
        if self.key is None or key < self.key:
            self.key = key
            return True
        return False

    def keep(self, epoch: int, state: dict, source: str) -> None:
        """``state``'s weights (copied to the CPU) are θ* from here on."""
        self.weights, self.epoch, self.source = cpu_copy(state), epoch, source

    def offer(self, candidate: dict, state: Callable[[], dict], source: str) -> bool:
        """Keep ``state()`` when ``candidate`` wins under a scored rule; whether it was kept."""
        if self.scored and self.wins(candidate):
            self.keep(candidate["epoch"], state(), source)
            return True
        return False

    def restore(self, model, otherwise: Optional[dict] = None) -> None:
        """The model ends with θ*: the kept weights, or ``otherwise`` (the weights it held before an average was
        tried) when none were kept."""
        state = self.weights if self.weights is not None else otherwise
        if state is not None:
            with torch.no_grad():
                model.load_state_dict(state)

    def save(self, checkpoint: Path) -> dict:
        """The weights into ``checkpoint``; the rest returned for the schedule's state file."""
        from safetensors.torch import save_file

        if self.weights is not None:
            save_file(self.weights, str(Path(checkpoint) / BEST_FILE))
        return {"best_epoch": self.epoch, "best_key": self.key, "theta_source": self.source}

    def load(self, checkpoint: Path, saved: dict) -> None:
        """What ``save`` wrote (``saved``: the schedule's state file)."""
        from safetensors.torch import load_file

        path = Path(checkpoint) / BEST_FILE
        self.weights = load_file(str(path)) if path.is_file() else None
        self.epoch, self.key = saved["best_epoch"], saved.get("best_key")
        self.source = saved.get("theta_source", _source_before(saved) if self.weights is not None else None)


def _source_before(saved: dict) -> str:
    """The source of a θ* saved before checkpoints named it: the EMA's when its epoch says so."""
    epoch = next((h for h in saved.get("history", []) if h["epoch"] == saved["best_epoch"]), {})
    return "ema" if epoch.get("ema_best") else "best"
