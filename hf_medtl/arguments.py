"""The recipe's argument dataclasses: every key, its default and its help text, in one place.

Keys are flat (as with ``HfArgumentParser``); each belongs to exactly one group. Option fields are typed as
``Literal[...]`` so that the recipe parser's own type check refuses a bad value with the list of choices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # ~7,000 x 7,000: beyond any slice or X-ray; whole-slide images need tiling


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "Backbone: a Hub id (e.g. microsoft/resnet-50, timm/densenet121.tv_in1k) or a local directory "
                "holding an HF-format checkpoint (e.g. one written by `hf-medtl convert`)."})
    pretrained: bool = field(default=True, metadata={
        "help": "false: same architecture, random weights (the no-transfer baseline to measure the gain against)."})
    finetune_strategy: Literal["full", "linear_probe"] = field(default="full", metadata={
        "help": "full: update every weight (seed 000). linear_probe: freeze the backbone, train the new head."})
    allow_pickle_weights: bool = field(default=False, metadata={
        "help": "Also load pickle weights (pytorch_model.bin), which can run code when unpickled; safetensors only by default."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow code shipped with a Hub checkpoint to run. Off unless you trust the checkpoint."})


@dataclass
class DataArguments:
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "A folder with one sub-folder of images per class; split train/val/test by the ratios below."})
    train_dir: Optional[str] = field(default=None, metadata={
        "help": "Pre-split layout: the training folder (class sub-folders); validation is carved out of it."})
    test_dir: Optional[str] = field(default=None, metadata={
        "help": "Pre-split layout: the test folder (class sub-folders), used as it is."})
    csv_file: Optional[str] = field(default=None, metadata={
        "help": "A CSV of labels: columns path (relative to the CSV's folder) and label; split by the ratios below."})
    npz_file: Optional[str] = field(default=None, metadata={
        "help": "A MedMNIST .npz ({train,val,test}_images/_labels); its own splits are kept, a missing test split "
                "is carved out of train by test_ratio."})
    class_names: Optional[list[str]] = field(default=None, metadata={
        "help": "Names of the integer labels of an npz_file, in label order (default: '0', '1', ...)."})
    file_pattern: str = field(default="**/*", metadata={
        "help": "Glob, relative to each class folder, of the files to use (e.g. '**/400X/*.png' for BreaKHis)."})
    allow_paths_outside_root: bool = field(default=False, metadata={
        "help": "Read image paths that resolve outside their root (a CSV's folder, a class folder): absolute "
                "paths, '..', links. Refused by default."})
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata={
        "help": "Largest width x height decoded; a file whose header declares more is unreadable (a decompression "
                "bomb, or a whole-slide image that needs tiling). Checked before decoding."})
    val_ratio: float = field(default=0.1, metadata={"help": "Fraction of the images (of train_dir when pre-split) for validation."})
    test_ratio: float = field(default=0.1, metadata={"help": "Fraction of the images for test (ignored when pre-split)."})
    split_seed: Optional[int] = field(default=None, metadata={"help": "Seed of the stratified split; default: seed."})
    data_check: bool = field(default=True, metadata={
        "help": "Decode every image once before training: list unreadable files, hash pixels for the leakage guard."})
    on_bad_image: Literal["error", "skip"] = field(default="error", metadata={
        "help": "error: stop before training, listing unreadable images (data_report.json). skip: train without them."})
    dedupe: bool = field(default=True, metadata={
        "help": "Keep each group of exact/near duplicate images inside one split (needs data_check)."})
    near_duplicate_distance: Optional[int] = field(default=4, metadata={
        "help": "Max Hamming distance of 64-bit perceptual hashes for near-duplicate candidates (each confirmed on "
                "the pixels, see near_duplicate_pixel_distance); null: exact copies only."})
    near_duplicate_pixel_distance: Optional[float] = field(default=None, metadata={
        "help": "Largest pixel distance that confirms a near-duplicate candidate: mean absolute difference of the "
                "blurred, standardised 32x32 grey thumbnails at their best alignment (+/-3 px), in standard "
                "deviations. null: resolution-aware default, 0.08 when either image's shorter side is below "
                "small_image_size, else 0.12 (calibrated on the shared datasets; README 'Duplicate leakage')."})
    small_image_size: int = field(default=64, metadata={
        "help": "Shorter side (px) below which an image counts as small for near duplicates: 64 hash bits say little "
                "about it, so the stricter pixel default applies (data_report.json says which rule applied)."})
    group_regex: Optional[str] = field(default=None, metadata={
        "help": "Regex searched in each file name; its first group (or the match) is a patient id kept in one "
                "split, e.g. 'SOB_[BM]_[A-Z]+-(\\d+-\\d+)' for BreaKHis."})
    cross_split_duplicates: Literal["remove", "keep"] = field(default="remove", metadata={
        "help": "A copy of a test (or MedMNIST val) image in the training pool: remove it from train, or keep it "
                "(reported either way)."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Square input size in pixels; default: the backbone's image-processor size."})
    augment: bool = field(default=True, metadata={"help": "Random augmentation of training images (train only)."})
    crop_scale_min: float = field(default=0.8, metadata={
        "help": "Random resized crop: smallest area fraction kept (1.0 disables the crop)."})
    rotation_degrees: float = field(default=10.0, metadata={"help": "Random rotation range, +/- degrees (0 disables)."})
    hflip_prob: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip (0 disables)."})


@dataclass
class ScheduleArguments:
    adaptive_lr: bool = field(default=True, metadata={
        "help": "Use the seed paper's threshold-switched LR reduction and early stop (docs/adaptive-lr.md)."})
    threshold: float = field(default=0.9, metadata={"help": "T: below it monitor training accuracy, else validation loss."})
    patience: int = field(default=2, metadata={"help": "p: epochs without improvement before the LR is reduced."})
    stop_patience: int = field(default=2, metadata={"help": "P: number of LR reductions after which training stops."})
    factor: float = field(default=0.5, metadata={"help": "phi: multiplicative LR reduction."})
    train_accuracy: Literal["running", "full"] = field(default="running", metadata={
        "help": "running: counted during the training pass (augmented, no extra cost). full: an extra "
                "eval-mode pass over the training set at each epoch end (the paper's definition)."})


@dataclass
class EvaluationArguments:
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% confidence intervals (0: none)."})
    ci_method: Literal["bca", "percentile"] = field(default="bca", metadata={
        "help": "bca: bias-corrected and accelerated bootstrap (Efron; jackknife acceleration; covers better near 100% "
                "and at small n). percentile: the plain percentile bootstrap."})


@dataclass
class MedTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the seed paper's defaults (batch 32, lr 1e-3, 10 epochs)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "Where the run writes; default outputs/<recipe name>."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Initial learning rate (seed 000: 1e-3; ViT* 1e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Maximum number of epochs."})
    lr_scheduler_type: Union[SchedulerType, str] = field(default="constant", metadata={
        "help": "Trainer's own schedule; constant, so that the LR changes only by the adaptive schedule."})
    eval_strategy: Union[IntervalStrategy, str] = field(default="epoch", metadata={"help": "Validate every epoch."})
    logging_strategy: Union[IntervalStrategy, str] = field(default="epoch", metadata={"help": "Log every epoch."})
    save_strategy: Union[SaveStrategy, str] = field(default="no", metadata={
        "help": "Trainer checkpoints; the best weights are kept by the adaptive schedule."})
    report_to: Union[None, str, list] = field(default="none", metadata={"help": "Experiment trackers."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image column for the transforms."})
    disable_tqdm: Optional[bool] = field(default=True, metadata={
        "help": "No per-step progress bar: one aligned row per epoch is printed instead (set false for the bar)."})


GROUPS = {"model": ModelArguments, "data": DataArguments, "schedule": ScheduleArguments,
          "evaluation": EvaluationArguments, "training": MedTrainingArguments}
