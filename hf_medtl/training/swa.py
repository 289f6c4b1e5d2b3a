"""Stochastic weight averaging over the last epochs (Izmailov et al. 2018): the weights at the end of each of the
last ``swa_epochs`` epochs the run trains are averaged when training ends, BatchNorm statistics are recomputed for
the averaged weights on the training batches, and the average is scored on validation; it becomes θ* when it wins
under the run's θ* rule. The window is a rolling one because the adaptive schedule decides when a run ends."""
from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from hf_medtl.training.theta import cpu_copy

logger = logging.getLogger("hf_medtl")
SCORES = ("loss", "accuracy", "balanced_accuracy", "f1_macro")
WINDOW_FILE = "swa_window.safetensors"  # in each checkpoint, so that a resumed run averages the same epochs


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of floating-point tensors; other tensors (BatchNorm's batch counters) from the last."""
    return {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone())
            for k, v in states[-1].items()}


def recompute_batch_norm(model, batches) -> int:
    """BatchNorm running statistics for the current weights, as ``torch.optim.swa_utils.update_bn`` computes them
    (reset, momentum None: the plain average over the batches, forwards in training mode without gradients), but only
    for the layers that trained: a frozen layer (put in eval mode by the strategy's hook) keeps its statistics. Across
    processes the statistics are averaged, so that every rank holds the same model. Returns the layers recomputed."""
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    kept = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
            for m in layers}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in batches:  # the batch as training feeds it (pixels, or a head's cached features), unlabelled
            model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
    model.train(was_training)
    recomputed = 0
    for m in layers:
        mean, var, count, momentum = kept[m]
        m.momentum = momentum
        if m.num_batches_tracked.item() == 0:  # frozen (or unused): the pass never updated it, so it keeps its own
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
            continue
        if dist.is_available() and dist.is_initialized():
            for buffer in (m.running_mean, m.running_var):
                dist.all_reduce(buffer)
                buffer /= dist.get_world_size()
        recomputed += 1
    return recomputed


class SwaCallback(TrainerCallback):
    """Keeps the weights of the last ``epochs`` epochs (CPU copies), and when training ends (after the adaptive
    callback has restored θ*) averages them, recomputes BatchNorm, evaluates the average with the Trainer on the
    validation set and offers it to θ*'s owner (``adaptive.theta``), which decides what the model ends with;
    ``entry`` is the metrics' "swa" entry. The window is saved in every checkpoint with the schedule's state, so that
    a resumed run averages what the uninterrupted one would."""

    def __init__(self, epochs: int, adaptive, trainer):
        self.window: collections.deque = collections.deque(maxlen=epochs)
        self.adaptive, self.theta, self.trainer = adaptive, adaptive.theta, trainer
        self.entry: Optional[dict] = None
        adaptive.companions.append(self)

    def save_state(self, checkpoint: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"{i}/{k}": v for i, (_, state) in enumerate(self.window) for k, v in state.items()}
        save_file(tensors, str(Path(checkpoint) / WINDOW_FILE),
                  metadata={"epochs": json.dumps([e for e, _ in self.window])})

    def load_state(self, checkpoint: Path) -> None:
        from safetensors import safe_open

        path = Path(checkpoint) / WINDOW_FILE
        self.window.clear()
        if not path.is_file():
            logger.warning(f"swa_epochs: {checkpoint} holds no SWA window (saved without swa_epochs); the average "
                           "covers the epochs trained from here")
            return
        with safe_open(str(path), "pt") as f:
            epochs = json.loads(f.metadata()["epochs"])
            states = [{} for _ in epochs]
            for key in f.keys():
                i, name = key.split("/", 1)
                states[int(i)][name] = f.get_tensor(key)
        self.window.extend(zip(epochs, states))

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if "eval_loss" not in (metrics or {}) or not self.adaptive.history:
            return  # outside training, or another callback's own pass
        epoch = self.adaptive.history[-1]["epoch"]
        if not self.window or self.window[-1][0] != epoch:
            self.window.append((epoch, cpu_copy(model.state_dict())))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        epochs, states = [e for e, _ in self.window], [s for _, s in self.window]
        self.window.clear()  # (a search's next trial starts its own)
        if len(epochs) < 2:
            logger.info(f"swa_epochs: {len(epochs)} epoch trained, nothing to average")
            self.entry = {"epochs": epochs, "kept": False, "reason": "under 2 epochs"}
            return
        theta = cpu_copy(model.state_dict())  # θ*, restored by the adaptive callback
        with torch.no_grad():
            model.load_state_dict(average_states(states))
        recomputed = recompute_batch_norm(model, self._train_batches())
        scores = self._evaluate()
        val = {f"val_{k}": v for k, v in scores.items()}
        if not self.theta.scored:
            logger.info(f"swa_epochs: the average is scored but never kept: theta_star '{self.theta.rule}' "
                        "does not compare validation scores (use val_loss, val_accuracy, val_balanced_accuracy or "
                        "val_f1_macro)")
        kept = self.theta.offer({"epoch": epochs[-1], **val}, model.state_dict, "swa")
        self.entry = {"epochs": epochs, "batch_norm_layers_recomputed": recomputed, **val, "kept": kept}
        logger.info(f"swa: the average of epochs {epochs[0]}-{epochs[-1]} scores validation loss {scores['loss']:.4f}, "
                    f"accuracy {scores.get('accuracy', float('nan')):.4f}: "
                    + ("it is θ*" if kept else "θ* stays the run's own weights"))
        self.theta.restore(model, otherwise=theta)  # the average when it won, else θ* as it was

    def _train_batches(self):
        """The training loader as the Trainer builds it (its sampler, collator, sharding), without persistent
        workers: the pass runs once, and its workers should end with it."""
        args = self.trainer.args
        persistent, args.dataloader_persistent_workers = args.dataloader_persistent_workers, False
        try:
            return self.trainer.get_train_dataloader()
        finally:
            args.dataloader_persistent_workers = persistent

    def _evaluate(self) -> dict:
        """The validation scores, by the Trainer's own evaluation loop; not trainer.evaluate(), which would log to
        report_to trackers that closed when training ended."""
        trainer = self.trainer
        metrics = trainer.evaluation_loop(trainer.get_eval_dataloader(), "swa", metric_key_prefix="swa").metrics
        return {k: metrics[f"swa_{k}"] for k in SCORES if f"swa_{k}" in metrics}


def attach(trainer, adaptive, epochs: Optional[int]) -> Optional[SwaCallback]:
    """Add the callback after the adaptive one (its θ* is restored first when training ends)."""
    if epochs is None:
        return None
    callback = SwaCallback(epochs, adaptive, trainer)
    trainer.add_callback(callback)
    return callback
