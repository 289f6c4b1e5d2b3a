"""The training stage: a transformers Trainer wired to the adaptive schedule."""
from __future__ import annotations

import dataclasses

import numpy as np
from transformers import Trainer, default_data_collator

from hf_medtl.callbacks import AdaptiveLRCallback
from hf_medtl.errors import HfMedtlError
from hf_medtl.schedule import AdaptiveSchedule


def _logits(predictions):
    return predictions[0] if isinstance(predictions, tuple) else predictions


def accuracy(eval_pred) -> dict:
    return {"accuracy": float((_logits(eval_pred.predictions).argmax(-1) == eval_pred.label_ids).mean())}


def build_trainer(model, processor, datasets: dict, recipe) -> tuple[Trainer, AdaptiveLRCallback]:
    args, sched = recipe.training, recipe.schedule
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "epoch":
        raise HfMedtlError(f"eval_strategy '{args.eval_strategy}': the adaptive schedule decides once per epoch; "
                           "use eval_strategy 'epoch'")
    if sched.train_accuracy == "running" and args.label_smoothing_factor > 0:
        raise HfMedtlError("label_smoothing_factor > 0 keeps labels from the model's forward, so the running "
                           "training accuracy cannot be counted; set train_accuracy 'full'")
    schedule = (AdaptiveSchedule(sched.threshold, sched.patience, sched.stop_patience, sched.factor)
                if sched.adaptive_lr else None)
    callback = AdaptiveLRCallback(schedule, sched.train_accuracy)
    # The run pushes once, when its outputs are complete (hf_medtl.hub), not from inside the Trainer; and the
    # Trainer never holds the token, so that training_args.bin and checkpoints cannot leak it.
    trainer = Trainer(model=model, args=dataclasses.replace(args, push_to_hub=False, hub_token=None),
                      train_dataset=datasets["train"], eval_dataset=datasets["validation"],
                      processing_class=processor, data_collator=default_data_collator, compute_metrics=accuracy,
                      callbacks=[callback])
    if sched.train_accuracy == "full":
        def evaluate_train():
            m = trainer.predict(datasets["train_eval"], metric_key_prefix="train").metrics
            return m["train_loss"], m["train_accuracy"]

        callback.evaluate_train = evaluate_train
    return trainer, callback


def predict(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, true labels), gathered over all processes."""
    out = trainer.predict(dataset, metric_key_prefix="predict")
    logits = _logits(out.predictions).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), out.label_ids
