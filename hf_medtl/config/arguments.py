"""The recipe's argument dataclasses: every key, its default and its help text, in one place.

Keys are flat (as with ``HfArgumentParser``); each belongs to exactly one group. Option fields are typed as
``Literal[...]`` so that the recipe parser's own type check refuses a bad value with the list of choices.
The training group (transformers' TrainingArguments) is in training_arguments.py: this module imports neither
transformers nor torch, so that the command line can build its flags from these fields at --help speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # ~7,000 x 7,000: beyond any slice or X-ray; whole-slide images need tiling
# A recipe that gives no num_train_epochs trains at least this many optimiser steps (min_train_steps), so that a
# small dataset gets the epochs it needs: BreastMNIST's 424 training images at batch 32 are 14 steps an epoch, and
# 1000 steps ~72 epochs (the MedMNIST+ baselines train 100); 4,500 images (143 steps an epoch) keep their 10 epochs.
# Chosen on BreastMNIST cross-validation (docs/benchmarks.md, "Small data"); the adaptive schedule still ends a
# converged run, so the steps are a ceiling on the epochs, not a cost every run pays.
DEFAULT_MIN_TRAIN_STEPS = 1000
# The default of a key that depends on the recipe's other keys: resolved by config/presets.resolve_auto when the recipe is
# loaded, so a loaded recipe and its recipe.json never hold it, and --help and docs/recipes.md show the rule.
AUTO = "auto"


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "Backbone: a Hub id (e.g. microsoft/resnet-50, timm/densenet121.tv_in1k) or a local directory "
                "holding an HF-format checkpoint (e.g. one written by `hf-medtl convert`)."})
    pretrained: bool = field(default=True, metadata={
        "help": "false: same architecture, random weights (the no-transfer baseline to measure the gain against)."})
    finetune_strategy: Literal["full", "linear_probe", "partial", "gradual", "lora", "dora", "knn"] = field(default="full", metadata={
        "help": "full: update every weight (seed 000). linear_probe: freeze the backbone, train the new head. "
                "partial: the head and the backbone's last trainable_stages stages train (seed 002's 'last few "
                "layers'). gradual: start like partial and unfreeze one more stage at each epoch of "
                "unfreeze_at_epochs. Stages: timm's group_matcher, or an HF model's encoder stages/layers. "
                "lora / dora: the backbone stays frozen, low-rank adapters (peft's LoRA, or DoRA) on "
                "lora_target_modules and the head train; the adapters are merged into the saved weights. "
                "knn: no training; the k nearest training images by the frozen backbone's L2-normalised features "
                "vote (knn_k, knn_metric, knn_weights; needs augment false)."})
    trainable_stages: Optional[int] = field(default=None, metadata={
        "help": "partial: how many of the backbone's last stages train (default 1). gradual: how many train from "
                "epoch 1 (default 0, the head only)."})
    unfreeze_at_epochs: list[int] = field(default_factory=list, metadata={
        "help": "gradual: the (1-based) epochs at whose start one more stage unfreezes, e.g. [3, 5]."})
    backbone_lr_multiplier: float = field(default=1.0, metadata={
        "help": "Discriminative LRs: the backbone trains at learning_rate x this (the head at learning_rate)."})
    layer_decay: Optional[float] = field(default=None, metadata={
        "help": "Layer-wise LR decay (timm's param_groups_layer_decay): backbone stage i of S trains at "
                "learning_rate x backbone_lr_multiplier x layer_decay^(S-i); e.g. 0.75. null: none."})
    lora_r: int = field(default=8, metadata={"help": "lora / dora: the rank r of each adapter (B @ A, A: r x in)."})
    lora_alpha: int = field(default=16, metadata={
        "help": "lora / dora: the adapters' scale is lora_alpha / lora_r (peft's lora_alpha)."})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "lora / dora: dropout on the adapters' input during training, in [0, 1)."})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={
        "help": "lora / dora: the layers that get adapters, by module name or its last part(s) (peft's "
                "target_modules), e.g. [\"q_proj\", \"v_proj\"]. null: per family, the attention query and value "
                "projections of a ViT-like model (query/value, q_proj/v_proj, or timm's fused qkv), the 1x1 "
                "(pointwise) convolutions of a CNN (and its pointwise Linear layers, as ConvNeXt's)."})
    save_adapter: bool = field(default=False, metadata={
        "help": "lora / dora: also write the adapter alone (adapter_config.json + adapter_model.safetensors, the "
                "head included) to output_dir/adapter/, for peft's PeftModel.from_pretrained on the base model."})
    knn_k: Optional[int] = field(default=None, metadata={
        "help": "knn: how many nearest training images vote. null: chosen by validation accuracy among "
                "1, 3, 5, 7, 11, 15, 21."})
    knn_metric: Optional[Literal["cosine", "euclidean"]] = field(default="cosine", metadata={
        "help": "knn: the distance between L2-normalised features: cosine (1 - cos) or euclidean. null: chosen "
                "by validation accuracy."})
    knn_weights: Literal["uniform", "distance"] = field(default="uniform", metadata={
        "help": "knn: each of the k neighbours votes once (uniform) or by 1 / its distance (distance)."})
    head: Literal["linear", "bottleneck"] = field(default="linear", metadata={
        "help": "linear: the backbone family's own head, re-initialised. bottleneck: seed 001's compression head "
                "z -> h = W'z (bottleneck_dim units) -> softmax(V'h + b), penalised by l1/l2_feature_reg."})
    bottleneck_dim: int = field(default=256, metadata={"help": "Width k of the bottleneck layer h."})
    l1_feature_reg: float = field(default=0.0, metadata={
        "help": "lambda1: adds lambda1 x ||h||_1 (batch mean) to the loss; h is the bottleneck (or the pooled "
                "features with a linear hf_medtl head)."})
    l2_feature_reg: float = field(default=0.0, metadata={"help": "lambda2: adds lambda2 x ||h||_2^2 (batch mean) to the loss."})
    head_dropout: float = field(default=0.0, metadata={
        "help": "Dropout before the classifier (seed 003); above 0 the model uses hf_medtl's head class."})
    pooling: Optional[Literal["cls", "mean", "cls+mean"]] = field(default=None, metadata={
        "help": "Set: the backbone is loaded as an encoder (AutoModel) with hf_medtl's head on its output pooled as "
                "said: cls (the CLS token), mean (of the patch tokens; of the feature maps for CNNs), cls+mean (both "
                "concatenated, as DINOv2's classifier). null: the family's classifier when transformers has one "
                "(else the encoder's pooler_output, or its CLS token / the maps' global average)."})
    head_init: Literal["default", "xavier_uniform", "kaiming_normal", "he", "lecun_normal", "orthogonal",
                       "trunc_normal"] = field(default="default", metadata={
        "help": "Initialisation of the head's weights (biases zero): default keeps the backbone family's; he is "
                "kaiming_normal (fan_in, ReLU gain); trunc_normal has std 0.02."})
    loss: Literal["cross_entropy", "focal"] = field(default="cross_entropy", metadata={
        "help": "cross_entropy (sigmoid + BCE for multi-label), or focal: (1 - p_t)^focal_gamma x CE (Lin et al.)."})
    focal_gamma: float = field(default=2.0, metadata={"help": "gamma of the focal loss."})
    class_weights: Union[Literal["balanced"], list[float], None] = field(default=None, metadata={
        "help": "Weights of the classes in the loss: 'balanced' (n / (K x n_class) on the training split, as "
                "scikit-learn's) or one number per class in class order. null: unweighted."})
    license: Optional[str] = field(default=None, metadata={
        "help": "The fine-tuned model's licence for its card (a Hub licence id, e.g. apache-2.0, cc-by-nc-4.0); it must "
                "respect the base model's and the data's. null: the base model's licence where its checkpoint states one, else 'unknown'."})
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
    path_column: str = field(default="path", metadata={"help": "csv_file: the column holding each image's path."})
    label_column: str = field(default="label", metadata={"help": "csv_file: the column holding each image's class."})
    group_column: Optional[str] = field(default="group", metadata={
        "help": "csv_file: the column holding the patient (subject, study) id; one patient's images stay in one split. "
                "A column named like patient*, subject*, study*, case* or pid, or whose values repeat like an id "
                "(e.g. ptid, ID: several rows per value, many values, not measurements), that is not the group column "
                "stops the run until you name it here, or set null to say the CSV has no patient column."})
    npz_file: Optional[str] = field(default=None, metadata={
        "help": "A MedMNIST .npz ({train,val,test}_images/_labels); its own splits are kept, a missing test split "
                "is carved out of train by test_ratio."})
    multilabel_csv: Optional[str] = field(default=None, metadata={
        "help": "Multi-label data (several findings per image, or none): a CSV with 'path' and one 0/1 column per "
                "finding (optional 'group'), or ChestX-ray14's Data_Entry_2017.csv ('Image Index' in images/ beside "
                "it, 'Finding Labels' split on '|', 'No Finding' = none, 'Patient ID' as the leakage group). "
                "Trains sigmoid outputs with BCE; split stratified per label."})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "A Hugging Face dataset: a Hub id (e.g. org/name), a local save_to_disk folder, a folder of parquet "
                "files (or one .parquet), or an imagefolder (images + metadata.csv/.jsonl with file_name and label). "
                "Its own validation/test splits (validation, valid, val, dev; test) are kept, missing ones carved out "
                "of train by val_ratio / test_ratio. Columns: image_column, label_column (a ClassLabel's names are the "
                "classes), group_column (a patient-like column left unused stops the run, as for csv_file)."})
    dataset_config_name: Optional[str] = field(default=None, metadata={
        "help": "dataset_name: the configuration (subset) of a Hub dataset that has several; null: its default."})
    image_column: str = field(default="image", metadata={
        "help": "dataset_name: the column holding each image (an Image feature, or image file paths)."})
    dataset_id: Optional[str] = field(default=None, metadata={
        "help": "The data's Hugging Face Hub dataset id (e.g. albertvillanova/medmnist-v2), for the model card's "
                "metadata; null: the card names the data but links no Hub dataset."})
    class_names: Optional[list[str]] = field(default=None, metadata={
        "help": "Names of the integer labels of an npz_file, in label order (default: '0', '1', ...)."})
    file_pattern: str = field(default="**/*", metadata={
        "help": "Glob, relative to each class folder, of the files to use (e.g. '**/400X/*.png' for BreaKHis)."})
    nifti_slice: Union[int, Literal["middle"], None] = field(default=None, metadata={
        "help": "3-D NIfTI volumes (.nii, .nii.gz): the slice to classify, an index along nifti_axis or \"middle\". "
                "null: only 2-D NIfTI images are read (a 3-D volume is refused in one line)."})
    nifti_axis: int = field(default=2, metadata={
        "help": "The axis of the NIfTI volume nifti_slice indexes (0, 1 or 2; 2: axial for RAS-oriented volumes)."})
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
                "small_image_size, else 0.12, and for larger images the same on 64x64 thumbnails within 0.055 (scaled "
                "with this key). Near groups are cliques: no pair in one is further apart than 1.25x these "
                "(calibrated on the shared datasets; docs/benchmarks.md 'The leakage guard itself')."})
    small_image_size: int = field(default=64, metadata={
        "help": "Shorter side (px) below which an image counts as small for near duplicates: 64 hash bits say little "
                "about it, so the stricter pixel default applies (data_report.json says which rule applied)."})
    group_regex: Optional[str] = field(default=None, metadata={
        "help": "Regex searched in each file name; its first group (or the match) is a patient id kept in one "
                "split, e.g. 'SOB_[BM]_[A-Z]+-(\\d+-\\d+)' for BreaKHis."})
    cross_split_duplicates: Literal["remove", "keep"] = field(default="remove", metadata={
        "help": "A copy of a test (or MedMNIST val) image in the training pool: remove it from train, or keep it "
                "(reported either way)."})
    max_group_share: float = field(default=0.2, metadata={
        "help": "Largest share of the images one leakage group (copies, a patient) may hold; a larger group stops "
                "the run before training (it would decide a split by itself: check group_column and the "
                "near-duplicate keys, or raise this, up to 1)."})
    allow_missing_classes: bool = field(default=False, metadata={
        "help": "Train even when the validation or test split has no image of some class (after grouping). "
                "Default: stop before training; when allowed, data_report.json (absent_classes) and a warning name "
                "them."})
    cv_folds: Optional[int] = field(default=None, metadata={
        "help": "K-fold cross-validation (set by `hf-medtl cv`): the train + validation pool is cut into K grouped, "
                "stratified folds; fold cv_fold is validation, the rest train; the test split is untouched."})
    cv_fold: int = field(default=0, metadata={"help": "Which fold (0 .. cv_folds-1) is the validation split."})
    cv_seed: Optional[int] = field(default=None, metadata={"help": "Seed of the fold partition; default: the split seed."})
    imbalance_ratio: Optional[float] = field(default=None, metadata={
        "help": "Imbalance study (set by `hf-medtl study imbalance`): each minority class of the training split keeps "
                "at most this fraction of the majority class's count (e.g. 0.05 = 1:20); validation and test untouched."})
    minority_classes: Optional[list[str]] = field(default=None, metadata={
        "help": "Classes imbalance_ratio subsamples; default: every class but the largest training class."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Square input size in pixels; default: the backbone's image-processor size."})
    augment: bool = field(default=True, metadata={"help": "Random augmentation of training images (train only)."})
    crop_scale_min: float = field(default=0.8, metadata={
        "help": "Random resized crop: smallest area fraction kept (1.0 disables the crop)."})
    rotation_degrees: float = field(default=10.0, metadata={"help": "Random rotation range, +/- degrees (0 disables)."})
    hflip_prob: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip (0 disables)."})
    auto_augment: Optional[Literal["trivial", "rand"]] = field(default=None, metadata={
        "help": "Automatic augmentation policy on training images (after the flip, before the tensor): trivial "
                "(TrivialAugmentWide: one random op at a random strength per image) or rand (RandAugment: "
                "num_ops 2 at rand_augment_magnitude). Evaluation is never augmented. null: none."})
    rand_augment_magnitude: int = field(default=9, metadata={
        "help": "auto_augment 'rand': the strength of each op, 0..30 (torchvision's magnitude bins: 31)."})
    mixup_alpha: float = field(default=0.0, metadata={
        "help": "MixUp on training batches: each image becomes lam x itself + (1 - lam) x another, its label the same "
                "mix, lam ~ Beta(alpha, alpha); e.g. 0.2-0.4. 0: off. Single-label only; the loss takes the soft labels, "
                "and the running training accuracy counts an image correct when the prediction is its soft label's "
                "largest class (train_accuracy 'full' scores the unmixed images)."})
    cutmix_alpha: float = field(default=0.0, metadata={
        "help": "CutMix on training batches: a box of another image is pasted in, the label mixed by area, lam ~ "
                "Beta(alpha, alpha); e.g. 1.0. 0: off. With mixup_alpha too, each batch gets one of the two at random."})
    mixup_prob: float = field(default=1.0, metadata={
        "help": "Probability that a training batch is mixed (MixUp or CutMix), in [0, 1]; unmixed batches keep "
                "their labels (as one-hot rows)."})
    sampler: Literal["random", "balanced"] = field(default="random", metadata={
        "help": "random: the Trainer's shuffling. balanced: draw training images with probability inversely "
                "proportional to their class frequency (with replacement, seeded per epoch), one epoch = n images."})
    cache_features: bool = field(default=True, metadata={
        "help": "When the backbone is frozen for the whole run (linear_probe, or a bottleneck head with "
                "linear_probe) and augment is false, compute its features once per split, store them (keyed by "
                "model, image size and data) and train the head on them; the saved model is still backbone + head."})
    feature_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "Where cached features are kept; default $HF_HOME/hf_medtl/features."})
    data_cache: bool = field(default=True, metadata={
        "help": "Decode every image once, resized for the model (and, when augmenting, a larger copy to crop from), "
                "into Arrow tables keyed by the pixel hash and reused by later epochs, runs and `hf-medtl evaluate`; "
                "evaluation pixels are identical to decoding the files. false: decode the source files every epoch."})
    data_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "Where the decoded images are kept; default $HF_MEDTL_IMAGE_CACHE, else "
                "$HF_DATASETS_CACHE/hf_medtl_images (~/.cache/huggingface/datasets/hf_medtl_images)."})


@dataclass
class ScheduleArguments:
    preset: Optional[Literal["paper"]] = field(default=None, metadata={
        "help": "Defaults for the keys a recipe leaves out. paper: seed 000's settings exactly as the Table-2 "
                "recipes ran them (constant LR changed only by Algorithm 1, θ* by the schedule, no label smoothing, "
                "no weight decay, no warm-up, no TTA; see PRESETS in hf_medtl/config/presets.py). null: the toolkit's "
                "defaults. Keys the recipe (or the command line) sets win over the preset."})
    adaptive_lr: bool = field(default=True, metadata={
        "help": "Use the seed paper's threshold-switched LR reduction and early stop (docs/adaptive-lr.md)."})
    threshold: float = field(default=0.9, metadata={"help": "T: below it monitor training accuracy, else validation loss."})
    patience: int = field(default=2, metadata={"help": "p: epochs without improvement before the LR is reduced."})
    stop_patience: int = field(default=2, metadata={"help": "P: number of LR reductions after which training stops."})
    factor: float = field(default=0.5, metadata={"help": "phi: multiplicative LR reduction."})
    train_accuracy: Literal["running", "full"] = field(default="running", metadata={
        "help": "running: counted during the training pass (augmented, no extra cost). full: an extra "
                "eval-mode pass over the training set at each epoch end (the paper's definition)."})
    theta_star: Literal["schedule", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_f1_macro", "last"] = field(
            default="val_accuracy", metadata={
        "help": "Which epoch's weights the run ends with and saves (θ*). schedule: Algorithm 1's saves (seed 000; "
                "while training accuracy stays below T, only epochs that improve it and the validation loss; "
                "without adaptive_lr, the last weights). val_loss / val_accuracy: the best validation loss / "
                "accuracy (ties: lower loss) over the whole run; val_balanced_accuracy / val_f1_macro: the best "
                "balanced accuracy / macro F1 (single-label; imbalanced classes). last: the last epoch's. The "
                "schedule still reduces the LR and stops. Default val_accuracy: schedule kept an under-trained epoch whenever training "
                "accuracy never reached T (docs/benchmarks.md 'Against the transformers example recipe')."})
    min_train_steps: Union[int, Literal["auto"], None] = field(default=AUTO, metadata={
        "help": "A budget in optimiser steps: train max(num_train_epochs, ceil(min_train_steps / steps per epoch)) "
                "epochs (steps per epoch from the training split, batch size, processes, gradient accumulation), so "
                "that small data trains long enough. The schedule still stops a converged run. null: "
                f"num_train_epochs alone. auto: {DEFAULT_MIN_TRAIN_STEPS} when the recipe (and its preset) gives no "
                "num_train_epochs, else null."})
    time_budget_minutes: Optional[float] = field(default=None, metadata={
        "help": "A wall-clock budget: after the first epoch the run sizes its epochs from that epoch's time (never past "
                "the epoch count above) and stops at the end of the last that fits. null: no limit."})
    ema_decay: Optional[float] = field(default=None, metadata={
        "help": "Keep an exponential moving average of the weights (timm ModelEmaV3, with its warm-up: the decay grows "
                "to this value with the step), scored on validation each epoch; it becomes θ* when it wins under a "
                "val_* theta_star rule, and is then the saved model. e.g. 0.999; null: off."})
    swa_epochs: Optional[int] = field(default=None, metadata={
        "help": "Stochastic weight averaging: when training ends, average the weights of the last N epochs it trained "
                "(a rolling window, since the schedule decides when the run ends), recompute BatchNorm statistics on "
                "the training batches (layers that trained only), score the average on validation; it becomes θ* when "
                "it wins under a val_* theta_star rule, and is then the saved model (metrics.json 'swa'). e.g. 5; "
                "null: off."})


@dataclass
class EvaluationArguments:
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% confidence intervals (0: none)."})
    ci_method: Literal["bca", "percentile"] = field(default="bca", metadata={
        "help": "bca: bias-corrected and accelerated bootstrap (Efron; jackknife acceleration; covers better near 100% "
                "and at small n). percentile: the plain percentile bootstrap."})
    tta: Literal["auto", "none", "hflip"] = field(default=AUTO, metadata={
        "help": "Test-time augmentation: hflip averages the probabilities of the image and its horizontal mirror (two "
                "forward passes). The saved model stays its backbone's own transformers class; config.json's "
                "`tta_views` records the views, and hf_medtl's serving (predict, evaluate, the app, and the ONNX "
                "export, which bakes them into the graph) applies them. Plain pipeline() serves the model alone: "
                "metrics.json reports both (`test`, with TTA; `model_alone`, without). auto: hflip when training "
                "flips images (augment true and hflip_prob > 0; the paper preset says none), else none."})
    tta_inside: bool = field(default=False, metadata={
        "help": "Save the TTA views inside the model's forward (MedtlEnsembleForImageClassification, loaded with "
                "trust_remote_code), so that plain pipeline() and the Hub's widgets serve the TTA-averaged "
                "probabilities too. false: a standard transformers model (no remote code)."})


@dataclass
class StudyArguments:
    search_space: Optional[dict] = field(default=None, metadata={
        "help": "`hf-medtl study search`: recipe key -> {\"low\", \"high\", \"log\"} (a range; integers give an integer "
                "range) or {\"choices\": [...]}, over model, schedule and training keys (learning_rate, threshold, "
                "patience, factor, ...); default: learning_rate 1e-4..1e-2 (log), threshold {0.8, 0.9, 0.95}, patience "
                "1..3, factor {0.3, 0.5, 0.7}."})
    ensemble_seeds: int = field(default=1, metadata={
        "help": "N >= 2: train the recipe N times, with seeds seed .. seed+N-1 on one split (the split seed's), each a "
                "normal run in output_dir/members/seed-S, and save in output_dir ONE model whose forward averages the "
                "members' probabilities (MedtlEnsembleForImageClassification); it is what is scored and served. "
                "1: a single model. For the K models of cross-validation: `hf-medtl cv --ensemble`."})
