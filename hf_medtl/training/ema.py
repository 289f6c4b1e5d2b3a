"""An exponential moving average of the weights (timm's ModelEmaV3), scored on validation at every epoch's end and
kept as θ* when it wins under the run's θ* rule. The adaptive schedule keeps deciding on the live weights. The
average is saved in every checkpoint, so that a resumed run goes on averaging where the killed one stopped."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from transformers import TrainerCallback

from hf_medtl.training.theta import cpu_copy

logger = logging.getLogger("hf_medtl")
EMA_FILE = "ema.safetensors"  # in each checkpoint: the average so far (restarting it from the resumed weights
# would give another model than the uninterrupted run's)


class EmaCallback(TrainerCallback):
    """Updates the EMA after every optimiser step; at each epoch's end (after the adaptive callback has recorded
    the epoch) evaluates it with the Trainer on the validation set, adds ``ema_val_*`` to the epoch's history, and
    offers its weights to θ*'s owner (``adaptive.theta``: what the run restores, scores and saves).

    Built after the Trainer has placed the model on its device (the copy lives beside it), before training
    registers any hook on the model (deepcopy would copy them). A companion of the adaptive callback: its average
    is written into each checkpoint (``save_state``) and restored on resume (``load_state``), as SWA's window is."""

    def __init__(self, model, decay: float, adaptive, trainer=None):
        from timm.utils import ModelEmaV3

        # timm's warm-up: the decay grows with the step towards ``decay``, so that a run of a few hundred steps
        # averages its recent weights instead of staying near the pretrained ones.
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.adaptive, self.theta, self.trainer = adaptive, adaptive.theta, trainer
        self._in_eval = False
        self._resumed: Optional[dict] = None  # the average a resumed checkpoint holds, set at on_train_begin
        adaptive.companions.append(self)

    def save_state(self, checkpoint: Path) -> None:
        from safetensors.torch import save_file

        save_file(cpu_copy(self.ema.module.state_dict()), str(Path(checkpoint) / EMA_FILE))

    def load_state(self, checkpoint: Path) -> None:
        from safetensors.torch import load_file

        path = Path(checkpoint) / EMA_FILE
        if not path.is_file():
            logger.warning(f"ema_decay: {checkpoint} holds no EMA (saved without ema_decay); the average starts "
                           "from the resumed weights")
            self._resumed = None
            return
        self._resumed = load_file(str(path))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._resumed is not None:  # the killed run's average, where it stopped
            with torch.no_grad():
                self.ema.module.load_state_dict(self._resumed)
            self._resumed = None
        else:
            self.ema.set(model)  # from the weights training starts at
        if not self.theta.scored:
            logger.info(f"ema_decay: the EMA is scored each epoch but never kept: theta_star "
                        f"'{self.theta.rule}' does not compare validation scores (use val_loss, val_accuracy, "
                        "val_balanced_accuracy or val_f1_macro)")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if self._in_eval or "eval_loss" not in (metrics or {}) or not self.adaptive.history:
            return  # outside training, or this callback's own pass
        if "ema_val_loss" in self.adaptive.history[-1]:
            return  # already scored (the last record is a resumed run's)
        record, scores = self.adaptive.history[-1], self._evaluate(model)
        record.update({f"ema_val_{k}": v for k, v in scores.items()})
        if self.theta.offer(candidate(record), self.ema.module.state_dict, "ema"):
            record["ema_best"] = True
            logger.info(f"epoch {record['epoch']}: the weights' EMA is θ* so far (validation loss "
                        f"{scores['loss']:.4f}, accuracy {scores.get('accuracy', float('nan')):.4f})")

    def _evaluate(self, model) -> dict:
        """The EMA's validation scores, computed by the Trainer exactly as the live weights' are: the EMA weights
        are swapped into the model for the pass, and the live ones put back."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._in_eval = True
        try:
            with torch.no_grad():
                model.load_state_dict(self.ema.module.state_dict())
            metrics = self.trainer.evaluate(metric_key_prefix="ema")
        finally:
            with torch.no_grad():
                model.load_state_dict(live)
            self._in_eval = False
        return {k[len("ema_"):]: v for k, v in metrics.items()
                if k in ("ema_loss", "ema_accuracy", "ema_balanced_accuracy", "ema_f1_macro")}


def candidate(record: dict) -> dict:
    """The EMA's scores of an epoch as θ*'s rule reads an epoch's (val_loss, val_accuracy...)."""
    out = {"epoch": record["epoch"], "val_loss": record["ema_val_loss"]}
    for key in ("accuracy", "balanced_accuracy", "f1_macro"):
        if f"ema_val_{key}" in record:
            out[f"val_{key}"] = record[f"ema_val_{key}"]
    return out


def attach(trainer, adaptive, decay: Optional[float]) -> Optional[EmaCallback]:
    """Add the EMA callback to a built Trainer (after the adaptive callback, so that the epoch is recorded first)."""
    if decay is None:
        return None
    callback = EmaCallback(trainer.model, decay, adaptive, trainer)
    trainer.add_callback(callback)
    return callback
