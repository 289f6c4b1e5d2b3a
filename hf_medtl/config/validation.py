"""Value checks of the recipe's arguments that a type cannot express (ranges, combinations). Each raises
ValueError naming the key in quotes, so that the recipe parser can blame the file or the command line."""
from __future__ import annotations

import re

from hf_medtl.config.arguments import DataArguments, ModelArguments, ScheduleArguments
from hf_medtl.config.extras import check_report_to

MAX_IMAGE_SIZE = 2048  # px: 4x a 512-px CT slice; 100,000 px would allocate ~30 GB per image


def validate(data: DataArguments, schedule: ScheduleArguments, training: dict) -> None:
    """Value checks that a type cannot express; raise ValueError with the key and what it accepts."""
    sources = [k for k in ("data_dir", "train_dir", "csv_file", "npz_file", "multilabel_csv", "dataset_name")
               if getattr(data, k)]
    if len(sources) != 1 and not (data.test_dir and sources == []):
        raise ValueError("give exactly one data source: 'data_dir' (class folders), 'train_dir' + 'test_dir' "
                         "(pre-split), 'csv_file', 'npz_file', 'multilabel_csv' or 'dataset_name' (a Hugging Face "
                         f"dataset); got {', '.join(sources) or 'none'}")
    if data.train_dir and not data.test_dir or data.test_dir and not data.train_dir:
        raise ValueError("a pre-split layout needs both 'train_dir' and 'test_dir'")
    ranges = {"val_ratio": (data.val_ratio, 0.0, 1.0, "strictly between 0 and 1"),
              "test_ratio": (data.test_ratio, 0.0, 1.0, "strictly between 0 and 1"),
              "crop_scale_min": (data.crop_scale_min, 0.0, 1.0 + 1e-12, "in (0, 1]")}
    for key, (v, low, high, text) in ranges.items():
        if not low < v < high:
            raise ValueError(f"'{key}' must lie {text}, got {v}")
    if data.val_ratio + data.test_ratio >= 1.0:
        raise ValueError(f"'val_ratio' + 'test_ratio' must be below 1, got {data.val_ratio + data.test_ratio}")
    if data.near_duplicate_distance is not None and not 0 <= data.near_duplicate_distance <= 32:
        raise ValueError(f"'near_duplicate_distance' must lie in 0..32 or be null, got {data.near_duplicate_distance}")
    if data.near_duplicate_pixel_distance is not None and not 0 <= data.near_duplicate_pixel_distance <= 2:
        raise ValueError("'near_duplicate_pixel_distance' must lie in 0..2 (standard deviations) or be null, got "
                         f"{data.near_duplicate_pixel_distance}")
    if data.group_regex:
        try:
            re.compile(data.group_regex)
        except re.error as e:
            raise ValueError(f"'group_regex' is not a valid regular expression ({e})") from None
    minimum = {"image_size": (data.image_size, 16), "max_image_pixels": (data.max_image_pixels, 1),
               "small_image_size": (data.small_image_size, 1),
               "per_device_train_batch_size": (training.get("per_device_train_batch_size"), 1),
               "per_device_eval_batch_size": (training.get("per_device_eval_batch_size"), 1)}
    for key, (v, low) in minimum.items():
        if v is not None and v < low:
            raise ValueError(f"'{key}' must be at least {low}, got {v}")
    if data.image_size is not None and data.image_size > MAX_IMAGE_SIZE:  # memory grows with its square
        raise ValueError(f"'image_size' must be at most {MAX_IMAGE_SIZE} px, got {data.image_size}; larger inputs "
                         "(whole-slide images) need tiling")
    positive = {k: training.get(k) for k in ("learning_rate", "num_train_epochs")}
    for key, v in positive.items():
        if v is not None and not v > 0:
            raise ValueError(f"'{key}' must be above 0, got {v}")
    if data.cv_folds is not None and not (data.cv_folds >= 2 and 0 <= data.cv_fold < data.cv_folds):
        raise ValueError(f"'cv_folds' must be at least 2 and 'cv_fold' in 0..cv_folds-1, got {data.cv_folds} and {data.cv_fold}")
    if data.imbalance_ratio is not None and not 0.0 < data.imbalance_ratio <= 1.0:
        raise ValueError(f"'imbalance_ratio' must lie in (0, 1], got {data.imbalance_ratio}")
    if data.nifti_axis not in (0, 1, 2) or isinstance(data.nifti_slice, int) and data.nifti_slice < 0:
        raise ValueError(f"'nifti_axis' must be 0, 1 or 2 and 'nifti_slice' an index >= 0 or \"middle\", got "
                         f"{data.nifti_axis} and {data.nifti_slice}")
    if not 0.0 <= data.hflip_prob <= 1.0:
        raise ValueError(f"'hflip_prob' must lie in [0, 1], got {data.hflip_prob}")
    _validate_budget(schedule)
    _validate_augmentation(data)
    check_report_to(training.get("report_to"))  # here, not when the Trainer is built after the data and the model
    # Whether or not adaptive_lr is on: a recipe that turns it on later (a search, an override) gets no surprise.
    check_schedule(schedule.threshold, schedule.patience, schedule.stop_patience, schedule.factor)


def check_schedule(threshold: float, patience: int, stop_patience: int, factor: float) -> None:
    """Algorithm 1's values (hf_medtl.training.schedule.AdaptiveSchedule checks its own with this, the one rule)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if patience < 1 or stop_patience < 1:
        raise ValueError(f"patience and stop_patience must be >= 1, got {patience} and {stop_patience}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must lie in (0, 1), got {factor}")


MAX_TRAIN_STEPS = 1_000_000


def validate_knn_schedule(m: ModelArguments, s: ScheduleArguments) -> None:
    """k-NN trains no weights: the keys that shape gradient training would be accepted and do nothing."""
    if m.finetune_strategy != "knn":
        return
    for key in ("ema_decay", "swa_epochs", "time_budget_minutes"):
        if getattr(s, key) is not None:
            raise ValueError(f"'{key}' does nothing with finetune_strategy 'knn' (no weights are trained); remove it")


def _validate_budget(s: ScheduleArguments) -> None:
    """The run's budget and weight averaging: each null (off) or in range."""
    # (a budget of a million steps is ~100x any small-data run; far beyond it the LR warm-up and decay spread over
    # steps that never run, so the model trains at a vanishing LR and is saved untrained)
    checks = {"min_train_steps": (s.min_train_steps, lambda v: 1 <= v <= MAX_TRAIN_STEPS, f"1..{MAX_TRAIN_STEPS:,}"),
              "time_budget_minutes": (s.time_budget_minutes, lambda v: v > 0, "above 0"),
              "ema_decay": (s.ema_decay, lambda v: 0 < v < 1, "strictly between 0 and 1"),
              "swa_epochs": (s.swa_epochs, lambda v: v >= 2, "at least 2 (an average of one epoch is that epoch)")}
    for key, (v, ok, text) in checks.items():
        if v is not None and not ok(v):
            raise ValueError(f"'{key}' must be {text} (or null), got {v}")


def _validate_augmentation(d: DataArguments) -> None:
    """TrivialAugment / RandAugment and MixUp / CutMix: in range, and only where they act (on with augment, the
    magnitude with 'rand', the probability with a mix), so that a key never silently does nothing."""
    if not 0 <= d.rand_augment_magnitude <= 30:
        raise ValueError(f"'rand_augment_magnitude' must lie in 0..30, got {d.rand_augment_magnitude}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(d, key) < 0:
            raise ValueError(f"'{key}' must be at least 0 (0: off), got {getattr(d, key)}")
    if not 0.0 <= d.mixup_prob <= 1.0:
        raise ValueError(f"'mixup_prob' must lie in [0, 1], got {d.mixup_prob}")
    mixing = d.mixup_alpha > 0 or d.cutmix_alpha > 0
    defaults = DataArguments()
    changed = [k for k in AUGMENT_KEYS if getattr(d, k) != getattr(defaults, k)]
    if changed and not d.augment:
        raise ValueError(f"'{changed[0]}' augments training images: it needs 'augment' true")
    if d.rand_augment_magnitude != defaults.rand_augment_magnitude and d.auto_augment != "rand":
        raise ValueError(f"'rand_augment_magnitude' applies to auto_augment 'rand', not {d.auto_augment!r}")
    if d.mixup_prob != defaults.mixup_prob and not mixing:
        raise ValueError("'mixup_prob' applies when 'mixup_alpha' or 'cutmix_alpha' is above 0")
    if mixing and d.multilabel_csv:  # a mixed 0/1 row is not a probability over classes
        raise ValueError(f"'{'mixup_alpha' if d.mixup_alpha > 0 else 'cutmix_alpha'}' mixes single-label images; "
                         "multi-label data ('multilabel_csv') is not supported")


def validate_study(study, data: DataArguments, model) -> None:
    """ensemble_seeds: at least 1; its members share one split, so it is not a cv fold's key (`hf-medtl cv
    --ensemble` ensembles folds), and a k-NN probe is deterministic (every seed would give the same member)."""
    n = study.ensemble_seeds
    if n < 1:
        raise ValueError(f"'ensemble_seeds' must be at least 1 (1: a single model), got {n}")
    if n > 1 and data.cv_folds:
        raise ValueError("'ensemble_seeds' trains its members on one split, not per cross-validation fold; to ensemble "
                         "the fold models use `hf-medtl cv RECIPE --ensemble` with ensemble_seeds 1")
    if n > 1 and model.finetune_strategy == "knn":
        raise ValueError("'ensemble_seeds' above 1 with finetune_strategy 'knn': a k-NN probe has no random "
                         "initialisation, every member would be the same model; use 1")


AUGMENT_KEYS = ("auto_augment", "rand_augment_magnitude", "mixup_alpha", "cutmix_alpha", "mixup_prob")


def validate_model(m: ModelArguments, data: DataArguments | None = None) -> None:
    """The model keys' value checks (strategy, heads, loss); ``data``: the data keys a strategy depends on."""
    if m.finetune_strategy == "gradual" and not m.unfreeze_at_epochs:
        raise ValueError("finetune_strategy 'gradual' needs 'unfreeze_at_epochs', e.g. [3, 5]")
    if m.unfreeze_at_epochs and m.finetune_strategy != "gradual":
        raise ValueError(f"'unfreeze_at_epochs' applies to finetune_strategy 'gradual', not '{m.finetune_strategy}'")
    if any(e < 1 for e in m.unfreeze_at_epochs):
        raise ValueError(f"'unfreeze_at_epochs' are 1-based epochs, got {m.unfreeze_at_epochs}")
    if m.trainable_stages is not None and (m.trainable_stages < 0 or m.finetune_strategy not in ("partial", "gradual")):
        raise ValueError(f"'trainable_stages' must be >= 0 and applies to finetune_strategy 'partial' or 'gradual', "
                         f"got {m.trainable_stages} with '{m.finetune_strategy}'")
    checks = {"backbone_lr_multiplier": (m.backbone_lr_multiplier, 0.0, None), "bottleneck_dim": (m.bottleneck_dim, 1, None),
              "l1_feature_reg": (m.l1_feature_reg, 0.0, None), "l2_feature_reg": (m.l2_feature_reg, 0.0, None),
              "focal_gamma": (m.focal_gamma, 0.0, None), "head_dropout": (m.head_dropout, 0.0, 0.999999),
              "layer_decay": (m.layer_decay, 1e-12, 1.0)}
    for key, (v, low, high) in checks.items():
        if v is not None and (v < low or (high is not None and v > high)):
            raise ValueError(f"'{key}' must lie in [{low:g}, {high if high is not None else 'inf'}], got {v}")
    if isinstance(m.class_weights, list) and any(w < 0 for w in m.class_weights):
        raise ValueError(f"'class_weights' must not be negative, got {m.class_weights}")
    if m.pooling is not None and m.pooling not in ("cls", "mean", "cls+mean"):  # from Python, past the recipe's types
        raise ValueError(f"'pooling' must be one of cls, mean, cls+mean (or null), got {m.pooling!r}")
    _validate_lora(m)
    _validate_knn(m, data)


KNN_KEYS = ("knn_k", "knn_metric", "knn_weights")


def _validate_knn(m: ModelArguments, data: DataArguments | None) -> None:
    """knn: fixed features (no augmentation), one class per image, k >= 1; its keys left alone elsewhere."""
    if m.finetune_strategy != "knn":
        defaults = ModelArguments()
        changed = [k for k in KNN_KEYS if getattr(m, k) != getattr(defaults, k)]
        if changed:
            raise ValueError(f"'{changed[0]}' applies to finetune_strategy 'knn', not '{m.finetune_strategy}'")
        return
    if m.knn_k is not None and m.knn_k < 1:
        raise ValueError(f"'knn_k' must be at least 1 (or null: chosen on validation), got {m.knn_k}")
    if data is not None and data.augment:  # the bank holds each training image's features once
        raise ValueError("'augment' must be false with finetune_strategy 'knn': its training features must be fixed")
    if data is not None and data.multilabel_csv:
        raise ValueError("'multilabel_csv': finetune_strategy 'knn' needs one class per image (multi-label is not "
                         "supported)")


LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "save_adapter")


def _validate_lora(m: ModelArguments) -> None:
    """The adapters' keys: in range for lora / dora, left at their defaults for every other strategy (where they
    would silently do nothing)."""
    if m.finetune_strategy not in ("lora", "dora"):
        defaults = ModelArguments()
        changed = [k for k in LORA_KEYS if getattr(m, k) != getattr(defaults, k)]
        if changed:
            raise ValueError(f"'{changed[0]}' applies to finetune_strategy 'lora' or 'dora', not '{m.finetune_strategy}'")
        return
    if m.lora_r < 1:
        raise ValueError(f"'lora_r' must be at least 1, got {m.lora_r}")
    if m.lora_alpha <= 0:
        raise ValueError(f"'lora_alpha' must be above 0, got {m.lora_alpha}")
    if not 0.0 <= m.lora_dropout < 1.0:
        raise ValueError(f"'lora_dropout' must lie in [0, 1), got {m.lora_dropout}")
    if m.lora_target_modules is not None and (not m.lora_target_modules or not all(m.lora_target_modules)):
        raise ValueError(f"'lora_target_modules' must name at least one module (or be null), got {m.lora_target_modules}")
