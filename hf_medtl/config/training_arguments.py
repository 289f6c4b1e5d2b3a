"""The recipe's training group: transformers' TrainingArguments with hf_medtl's defaults, and GROUPS, every
recipe group by name. Kept apart from arguments.py because it imports transformers (and so torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from hf_medtl.config.arguments import (DataArguments, EvaluationArguments, ModelArguments, ScheduleArguments,
                                       StudyArguments)
from hf_medtl.config.commands import EVAL_BATCH_SIZE


@dataclass
class MedTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the seed paper's defaults (batch 32, lr 1e-3, 10 epochs)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "Where the run writes; default outputs/<recipe name>."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Initial learning rate (seed 000: 1e-3; ViT* 1e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=EVAL_BATCH_SIZE, metadata={"help": "Evaluation batch size per device."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Maximum number of epochs."})
    lr_scheduler_type: Union[SchedulerType, str] = field(default="cosine", metadata={
        "help": "The Trainer's own LR schedule over num_train_epochs; the adaptive schedule's reductions multiply it. "
                "cosine (with warmup_steps, weight_decay and label_smoothing_factor: the toolkit's default recipe, "
                "docs/benchmarks.md 'Against the transformers example recipe'); constant: seed 000's (preset 'paper')."})
    warmup_steps: float = field(default=0.1, metadata={
        "help": "Linear LR warm-up: a number of optimiser steps, or a fraction in [0, 1) of all steps (0.1: the "
                "first 10%; it keeps the new head's first large gradients from wrecking the pretrained features)."})
    weight_decay: float = field(default=0.05, metadata={
        "help": "AdamW weight decay (not on biases and normalisation weights)."})
    label_smoothing_factor: float = field(default=0.1, metadata={
        "help": "Cross-entropy label smoothing (single-label classes; multi-label targets are not smoothed)."})
    eval_strategy: Union[IntervalStrategy, str] = field(default="epoch", metadata={"help": "Validate every epoch."})
    logging_strategy: Union[IntervalStrategy, str] = field(default="epoch", metadata={"help": "Log every epoch."})
    save_strategy: Union[SaveStrategy, str] = field(default="no", metadata={
        "help": "Trainer checkpoints; the best weights are kept by the adaptive schedule. Whatever it says, Ctrl-C "
                "or SIGTERM while training finishes the epoch, saves it as a checkpoint and prints the command that "
                "resumes it (--resume_from_checkpoint last)."})
    save_total_limit: Optional[int] = field(default=1, metadata={
        "help": "Checkpoints kept in output_dir (the newest; each holds the weights and the optimiser's state). "
                "null: every one."})
    report_to: Union[None, str, list] = field(default="none", metadata={"help": "Experiment trackers."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image column for the transforms."})
    dataloader_num_workers: int = field(default=-1, metadata={
        "help": "Loader worker processes; -1: chosen for the machine: 0 without a GPU (the model step already uses "
                "every core, and cached images cost < 1 ms; benchmarks/data_pipeline.py), else min(8, CPUs per "
                "process - 1) with persistent workers (0 below 256 training images)."})
    bf16: Optional[bool] = field(default=None, metadata={
        "help": "bfloat16 autocast; null: on for GPUs that support it (older GPUs get fp16 with loss scaling), off on CPU."})
    channels_last: Optional[bool] = field(default=None, metadata={
        "help": "Channels-last memory format for convolutional backbones; null: off. On an H200 it made EfficientNet-"
                "Lite0 ~13% faster per step (1,353 vs 1,199 img/s) but cost ~6-7 s at each new input shape (the first "
                "training batch, the last partial one, each evaluation batch size): 52 s of a 66 s three-epoch run "
                "(docs/benchmarks.md). true: on, for long runs on a GPU."})
    disable_tqdm: Optional[bool] = field(default=False, metadata={
        "help": "false: a progress bar over each epoch's steps on the main process (stderr), closed before the "
                "epoch's row (time, ETA) is printed; true: no bar, the rows alone. transformers' own bar (one over "
                "the whole run, printing raw log dicts) is never shown."})


GROUPS = {"model": ModelArguments, "data": DataArguments, "schedule": ScheduleArguments,
          "evaluation": EvaluationArguments, "study": StudyArguments, "training": MedTrainingArguments}
