"""The training stage: a transformers Trainer wired to the adaptive schedule, and the one inference path
(``predict``) that every command uses to turn a dataset into class probabilities."""
from __future__ import annotations

import dataclasses
import logging
import tempfile

import numpy as np
import torch
from transformers import Trainer, TrainingArguments, default_data_collator
from transformers.trainer_callback import PrinterCallback

from hf_medtl.callbacks import AdaptiveLRCallback
from hf_medtl.errors import HfMedtlError
from hf_medtl.schedule import AdaptiveSchedule

logger = logging.getLogger("hf_medtl")


def _logits(predictions):
    return predictions[0] if isinstance(predictions, tuple) else predictions


def accuracy(eval_pred) -> dict:
    return {"accuracy": float((_logits(eval_pred.predictions).argmax(-1) == eval_pred.label_ids).mean())}


def probabilities(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Class probabilities from logits (softmax in float64; with ``multi_label``, an independent sigmoid per
    label): the one place they are computed."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        from scipy.special import expit

        return expit(logits)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _machine_defaults(args, n_train: int):
    """Settings that depend on the machine and the data, not on the recipe's intent."""
    changes = {}
    if args.dataloader_pin_memory and not torch.cuda.is_available():
        changes["dataloader_pin_memory"] = False  # only warns on CPU
    # A last training batch of one image breaks BatchNorm when the feature map is 1x1 (inputs <= 32 px):
    # drop it. Batches are reshuffled every epoch, so no image is left out for good.
    if n_train % (args.per_device_train_batch_size * max(args.world_size, 1)) == 1 and not args.dataloader_drop_last:
        changes["dataloader_drop_last"] = True
        logger.info("the last training batch would hold one image; it is dropped each epoch (BatchNorm needs two)")
    return changes


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
    trainer_args = dataclasses.replace(args, push_to_hub=False, hub_token=None,
                                       **_machine_defaults(args, len(datasets["train"])))
    trainer = Trainer(model=model, args=trainer_args, train_dataset=datasets["train"],
                      eval_dataset=datasets["validation"], processing_class=processor,
                      data_collator=default_data_collator, compute_metrics=accuracy, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # its raw dicts would interleave with the callback's epoch rows
    callback.log = trainer.log
    if sched.train_accuracy == "full":
        def evaluate_train():
            m = trainer.predict(datasets["train_eval"], metric_key_prefix="train").metrics
            return m["train_loss"], m["train_accuracy"]

        callback.evaluate_train = evaluate_train
    return trainer, callback


def inference_trainer(model, batch_size: int = 64) -> Trainer:
    """A Trainer that only predicts (device placement, batching, gathering across processes)."""
    args = TrainingArguments(output_dir=tempfile.gettempdir(), per_device_eval_batch_size=batch_size,
                             report_to="none", remove_unused_columns=False, disable_tqdm=True,
                             dataloader_pin_memory=torch.cuda.is_available())
    return Trainer(model=model, args=args, data_collator=default_data_collator)


def predict(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, true labels), gathered over all processes."""
    if len(dataset) == 0:
        raise HfMedtlError("nothing to predict: the dataset is empty")
    out = trainer.predict(dataset, metric_key_prefix="predict")
    return probabilities(_logits(out.predictions)), out.label_ids

