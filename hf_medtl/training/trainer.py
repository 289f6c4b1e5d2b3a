"""The training stage: a transformers Trainer wired to the adaptive schedule, the loss and the sampler the recipe
asks for. (Inference, the run's own scoring included, is hf_medtl.inference.core.)"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Optional

import numpy as np
import torch
from transformers import Trainer, TrainingArguments, default_data_collator
from transformers.trainer_callback import PrinterCallback

from hf_medtl.training import ema, mixing, swa
from hf_medtl.training.interrupt import EpochEndInterrupt, TrainingInterrupted, resumed_line  # noqa: F401 (stages)
from hf_medtl.training.budget import Budget, TimeBudgetCallback, plan_epochs
from hf_medtl.training.callbacks import AdaptiveLRCallback, RunningAccuracy, StrategyCallback, sum_over_processes
from hf_medtl.training.memory import PeakMemoryCallback
from hf_medtl.training.progress import EpochPhases, EpochProgressBar
from hf_medtl.training.record import Training
from hf_medtl.errors import HfMedtlError
from hf_medtl.training.schedule import AdaptiveSchedule
from hf_medtl.training.theta import ThetaStar
from hf_medtl.models import is_multi_label, keep_frozen_in_eval_mode
from hf_medtl.training.losses import ClassificationLoss, resolve_class_weights

logger = logging.getLogger("hf_medtl")


def _logits(predictions):
    return predictions[0] if isinstance(predictions, tuple) else predictions


def accuracy(eval_pred) -> dict:
    """Accuracy; for multi-label (0/1 label rows) the mean per-label accuracy at probability 0.5. Single-label also
    balanced accuracy and macro F1, which θ* may follow when classes are imbalanced."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    logits, labels = _logits(eval_pred.predictions), eval_pred.label_ids
    if labels.ndim == 2:
        return {"accuracy": float(((logits > 0) == (labels > 0.5)).mean())}
    predicted = logits.argmax(-1)
    return {"accuracy": float((predicted == labels).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0))}


# Evaluation batches on a GPU at least this large: the model is in eval mode (BatchNorm's running statistics), so
# the batch size changes no probability, and a few large batches keep the GPU busier than many small ones (a
# Lite0 forward at 224 px in bf16 takes well under 2 GB at 256 images). The training batch is the recipe's.
GPU_EVAL_BATCH = 256


def eval_batch_size(batch_size: int, gpu: bool) -> int:
    """The evaluation batch for ``batch_size`` asked for: unchanged on CPU, at least GPU_EVAL_BATCH on a GPU."""
    return max(int(batch_size), GPU_EVAL_BATCH) if gpu else int(batch_size)


def _machine_defaults(args, n_train: int):
    """Settings that depend on the machine and the data, not on the recipe's intent."""
    changes = {}
    gpu = torch.cuda.is_available()
    if args.dataloader_pin_memory and not gpu:
        changes["dataloader_pin_memory"] = False  # only warns on CPU
    if gpu and not args.use_cpu:
        changes["per_device_eval_batch_size"] = eval_batch_size(args.per_device_eval_batch_size, True)
        if args.dataloader_pin_memory:  # pinned batches copied to the GPU while the previous step computes
            changes["accelerator_config"] = {**dataclasses.asdict(args.accelerator_config), "non_blocking": True}
    if args.dataloader_num_workers < 0:  # -1: the machine decides
        per_process = (os.cpu_count() or 1) // max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
        workers = min(8, per_process - 1) if gpu and n_train >= 256 else 0
        changes["dataloader_num_workers"] = max(workers, 0)
        if workers > 0:
            changes["dataloader_persistent_workers"] = True
    if args.bf16 is None:
        bf16 = gpu and torch.cuda.is_bf16_supported()
        changes["bf16"] = bf16
        if gpu and not bf16 and not args.fp16:
            changes["fp16"] = True
    # A last training batch of one image breaks BatchNorm when the feature map is 1x1 (inputs <= 32 px):
    # drop it. Batches are reshuffled every epoch, so no image is left out for good.
    if n_train % (args.per_device_train_batch_size * max(args.world_size, 1)) == 1 and not args.dataloader_drop_last:
        changes["dataloader_drop_last"] = True
        logger.info("the last training batch would hold one image; it is dropped each epoch (BatchNorm needs two)")
    return changes


def is_convolutional(model) -> bool:
    """A CNN (ResNet, DenseNet, EfficientNet, ConvNeXt...), not a ViT whose only convolution embeds patches."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 2


def train_labels(dataset) -> list:
    """The label column, read from the Arrow table (the lazy image transform is not run)."""
    table = dataset.data
    return table.column("label" if "label" in table.column_names else "labels").to_pylist()


class BalancedSampler(torch.utils.data.Sampler):
    """n draws per epoch, with replacement, each class equally likely (weights 1 / class count); seeded by
    seed + epoch so that every process draws the same sequence (accelerate shards its batches) and a resumed
    run draws what an uninterrupted one would."""

    def __init__(self, labels: list[int], seed: int):
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g).tolist())


class MedTrainer(Trainer):
    """The Trainer with its extension points filled: the training sampler ('balanced' draws classes evenly),
    drop_last and ``train_collator`` (MixUp / CutMix) applied to training batches only."""

    def __init__(self, *args, sampler: str = "random", train_collator=None, **kwargs):
        self.sampler, self.train_collator = sampler, train_collator
        super().__init__(*args, **kwargs)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, **kwargs):
        # dataloader_drop_last is for training batches only: validation and test must see every image; and so is
        # the mixing collator: evaluation (the training set's 'full' pass included) scores unmixed images.
        keep, collator = self.args.dataloader_drop_last, self.data_collator
        self.args.dataloader_drop_last = keep and is_training
        if is_training and self.train_collator is not None:
            self.data_collator = self.train_collator
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, **kwargs)
        finally:
            self.args.dataloader_drop_last, self.data_collator = keep, collator

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.sampler != "balanced":
            return super()._get_train_sampler(train_dataset)
        labels = train_labels(dataset)
        if labels and isinstance(labels[0], list):
            raise HfMedtlError("sampler 'balanced' needs one class per image; for multi-label use class_weights")
        return BalancedSampler(labels, self.args.data_seed if self.args.data_seed is not None else self.args.seed)


def loss_function(recipe, model, train_dataset, observer=None) -> ClassificationLoss | None:
    """hf_medtl's loss when the recipe asks for more than the model's own cross-entropy; None otherwise."""
    m, config = recipe.model, model.config
    multi_label = is_multi_label(config)
    l1, l2 = m.l1_feature_reg, m.l2_feature_reg
    smoothing = recipe.training.label_smoothing_factor
    if (m.class_weights is None and m.loss == "cross_entropy" and not (l1 or l2) and not multi_label and not smoothing
            and not mixing.is_mixing(recipe.data)):  # (the model's own loss would read mixed label rows as multi-label)
        return None  # (label smoothing goes through ours, so that the running training accuracy is counted)
    if (l1 or l2) and not hasattr(config, "l1_feature_reg"):
        raise HfMedtlError("l1_feature_reg / l2_feature_reg penalise hf_medtl's head: set head 'bottleneck' (or "
                           "head_dropout > 0 for a linear hf_medtl head)")
    classes = [config.id2label[i] for i in range(config.num_labels)]
    weights = resolve_class_weights(m.class_weights, train_labels(train_dataset), classes)
    if weights is not None:
        logger.info("class weights: " + ", ".join(f"{c} {w:.3g}" for c, w in zip(classes, weights)))
    return ClassificationLoss(weights, m.loss, m.focal_gamma, l1, l2, recipe.training.label_smoothing_factor,
                              multi_label, observer)


def optimizer_groups(recipe, model, args):
    """(optimizer class, kwargs with param groups) for discriminative LRs and gradual unfreezing (every
    parameter in a group from the start); None: the Trainer's own two groups."""
    from hf_medtl.models import param_groups

    m = recipe.model
    if m.finetune_strategy == "linear_probe" or (m.finetune_strategy != "gradual" and m.backbone_lr_multiplier == 1.0
                                                  and m.layer_decay is None):
        return None  # (a linear probe trains the head alone: one LR)
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups = param_groups(model, args.learning_rate, args.weight_decay, decay, m.backbone_lr_multiplier, m.layer_decay)
    return cls, {**kwargs, "params": groups}


def build_trainer(model, processor, datasets: dict, recipe) -> Training:
    args, sched = recipe.training, recipe.schedule
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "epoch":
        raise HfMedtlError(f"eval_strategy '{args.eval_strategy}': the adaptive schedule decides once per epoch; "
                           "use eval_strategy 'epoch'")
    running = RunningAccuracy()  # told by the loss when the Trainer keeps labels out of the forward
    loss = loss_function(recipe, model, datasets["train"], observer=running.count)
    if sched.train_accuracy == "running" and args.label_smoothing_factor > 0 and loss is None:
        raise HfMedtlError("label_smoothing_factor > 0 keeps labels from the model's forward, so the running "
                           "training accuracy cannot be counted; set train_accuracy 'full'")
    trainer = None  # built below: the schedule's collaborators that call it are called once it trains

    def evaluate_train():
        m = trainer.predict(datasets["train_eval"], metric_key_prefix="train").metrics
        return m["train_loss"], m["train_accuracy"]

    adaptive = AdaptiveLRCallback(
        AdaptiveSchedule.from_arguments(sched), sched.train_accuracy, theta=ThetaStar(sched.theta_star),
        evaluate_train=evaluate_train if sched.train_accuracy == "full" else None, running=running,
        loss_terms=(lambda: loss.epoch_terms(sum_over_processes)) if loss is not None else None,
        log=lambda values: trainer.log(values),  # trackers (report_to) see the decisions
        recipe_json=json.dumps(recipe.resolved, indent=2, default=str))  # into each checkpoint
    # The run pushes once, when its outputs are complete (hf_medtl.hub.push), not from inside the Trainer; and the
    # Trainer never holds the token, so that training_args.bin and checkpoints cannot leak it.
    changes = _machine_defaults(args, len(datasets["train"]))
    # From the training split as the Trainer will batch it, before the Trainer sizes its LR schedule over the epochs.
    drop_last = changes.get("dataloader_drop_last", args.dataloader_drop_last)
    budget = plan_epochs(sched, args, len(datasets["train"]), drop_last)
    if budget.epochs != args.num_train_epochs:
        changes["num_train_epochs"] = budget.epochs
    memory = PeakMemoryCallback()  # first, so that it measures from before the others' train-begin work
    callbacks = _callbacks(model, recipe, [EpochPhases(), memory, adaptive], changes)
    trainer_args = dataclasses.replace(args, push_to_hub=False, hub_token=None, disable_tqdm=True, **changes)
    trainer = MedTrainer(model=model, args=trainer_args, train_dataset=datasets["train"],
                         eval_dataset=datasets["validation"], processing_class=processor,
                         data_collator=default_data_collator, compute_metrics=accuracy, callbacks=callbacks,
                         compute_loss_func=loss, optimizer_cls_and_kwargs=optimizer_groups(recipe, model, args),
                         sampler=recipe.data.sampler, train_collator=mixing.train_collator(recipe.data, model.config))
    trainer.remove_callback(PrinterCallback)  # its raw dicts would interleave with the callback's epoch rows
    averaging = _add_epoch_end_callbacks(trainer, adaptive, recipe, budget)
    # Last of all: a Ctrl-C saves the epoch once every other callback has decided it (training/interrupt.py).
    interrupt = EpochEndInterrupt()
    trainer.add_callback(interrupt)
    return Training(trainer, adaptive, budget, memory, interrupt, averaging)


def _callbacks(model, recipe, callbacks: list, changes: dict) -> list:
    """The Trainer's callbacks after ``callbacks``: the fine-tuning strategy's, then the epoch bar; the model set up
    as the strategy and the machine want it (frozen layers in eval mode, channels-last)."""
    m, args = recipe.model, recipe.training
    if m.finetune_strategy == "gradual":
        callbacks.append(StrategyCallback(m))
        if args.world_size > 1:  # DDP registers only parameters that train when it wraps the model
            for p in model.parameters():
                p.requires_grad_(True)
            changes["ddp_find_unused_parameters"] = True
    # Last, so that it opens after the others' epoch-begin lines. The Trainer's own bar (disable_tqdm below) would
    # print raw log dicts and run over the whole run.
    callbacks.append(EpochProgressBar(enabled=not args.disable_tqdm))
    if m.finetune_strategy != "full":
        keep_frozen_in_eval_mode(model)
    if args.channels_last and is_convolutional(model):  # (off by default: see its help in config/training_arguments)
        model.to(memory_format=torch.channels_last)
    return callbacks


def _add_epoch_end_callbacks(trainer, adaptive, recipe, budget: Budget) -> Optional[swa.SwaCallback]:
    """The callbacks that run after the adaptive one at each epoch's end: the EMA's scoring, SWA's window, then the
    time budget (whose first-epoch time then includes the EMA's validation pass). SWA averages when training ends,
    after the adaptive callback has restored θ*. Returns SWA's callback (its entry is the record's)."""
    sched = recipe.schedule
    if sched.theta_star in ("val_balanced_accuracy", "val_f1_macro") and is_multi_label(trainer.model.config):
        raise HfMedtlError(f"theta_star '{sched.theta_star}' needs one class per image; for multi-label use "
                           "val_loss or val_accuracy")
    ema.attach(trainer, adaptive, sched.ema_decay)
    averaging = swa.attach(trainer, adaptive, sched.swa_epochs)
    if sched.time_budget_minutes is not None:
        trainer.add_callback(TimeBudgetCallback(sched.time_budget_minutes, budget))
    return averaging


def inference_trainer(model, batch_size: int = 64, like=None):
    """A Trainer that only predicts (device placement, batching, gathering across processes); on a GPU with
    loader workers, so that decoding keeps up with the forward. ``like``: the run's TrainingArguments, inside a
    run: its device choice (use_cpu) is kept, since arguments that disagree with it would reset the distributed
    state of a multi-process CPU launch (every rank would then count itself the main one)."""
    use_cpu = bool(getattr(like, "use_cpu", False))
    gpu = torch.cuda.is_available() and not use_cpu
    workers = max(0, min(8, (os.cpu_count() or 1) - 1)) if gpu else 0
    args = TrainingArguments(output_dir=tempfile.gettempdir(),
                             per_device_eval_batch_size=eval_batch_size(batch_size, gpu), report_to="none", remove_unused_columns=False, disable_tqdm=True, use_cpu=use_cpu,
                             dataloader_pin_memory=gpu, dataloader_num_workers=workers,
                             **({"accelerator_config": {"non_blocking": True}} if gpu else {}))
    return Trainer(model=model, args=args, data_collator=default_data_collator)
