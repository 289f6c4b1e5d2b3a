"""What a recipe leaves out: a preset's values (seed 000's Table-2 settings) and the "auto" defaults, each resolved
from the recipe's other keys in one place when the recipe is loaded."""
from __future__ import annotations

from hf_medtl.config.arguments import AUTO, DEFAULT_MIN_TRAIN_STEPS, DataArguments

# Seed 000's settings (Khoa & Tri, Table 2), for every key whose toolkit default may differ from them: a recipe with
# "preset": "paper" runs exactly as the Table-2 reproductions did, whatever the defaults become.
PRESETS = {"paper": {
    "learning_rate": 1e-3, "per_device_train_batch_size": 32, "num_train_epochs": 10.0, "lr_scheduler_type": "constant",
    "warmup_steps": 0, "weight_decay": 0.0, "label_smoothing_factor": 0.0, "adaptive_lr": True, "threshold": 0.9,
    "patience": 2, "stop_patience": 2, "factor": 0.5, "theta_star": "schedule", "tta": "none", "augment": True,
    "crop_scale_min": 0.8, "rotation_degrees": 10.0, "hflip_prob": 0.5, "val_ratio": 0.1, "test_ratio": 0.1}}


def resolve_auto(values: dict) -> dict:
    """``values`` (a recipe's keys: its file, its preset, the command line) with every "auto" default resolved from
    the other keys: the one place these defaults are decided. A key not given counts as "auto"."""
    out = dict(values)
    if out.get("min_train_steps", AUTO) == AUTO:  # no epoch count given: a step budget that suits the data
        out["min_train_steps"] = None if "num_train_epochs" in values else DEFAULT_MIN_TRAIN_STEPS
    if out.get("tta", AUTO) == AUTO:
        # Flip TTA when the model trained on flipped images (a mirror it knows); off when flips are off, e.g. where
        # laterality matters.
        flips = out.get("augment", DataArguments.augment) and out.get("hflip_prob", DataArguments.hflip_prob) > 0
        out["tta"] = "hflip" if flips else "none"
    return out
