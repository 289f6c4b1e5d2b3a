"""Recipes: a JSON file (plus ``--key value`` overrides) parsed strictly into argument dataclasses.

As with ``HfArgumentParser``, keys are flat and each one belongs to exactly one dataclass: ModelArguments,
DataArguments, ScheduleArguments or TrainingArguments (transformers'). Unlike it, a JSON value of the wrong
type is refused, not coerced, and an unknown key is refused with the nearest valid name.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from hf_medtl.errors import HfMedtlError

FINETUNE_STRATEGIES = ("full", "linear_probe")
TRAIN_ACCURACY_MODES = ("running", "full")


class RecipeError(HfMedtlError):
    pass


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "Backbone: a Hub id (e.g. microsoft/resnet-50, timm/densenet121.tv_in1k) or a local directory "
                "holding an HF-format checkpoint (e.g. one written by `hf-medtl convert`)."})
    pretrained: bool = field(default=True, metadata={
        "help": "false: same architecture, random weights (the no-transfer baseline to measure the gain against)."})
    finetune_strategy: str = field(default="full", metadata={
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
    val_ratio: float = field(default=0.1, metadata={"help": "Fraction of the images (of train_dir when pre-split) for validation."})
    test_ratio: float = field(default=0.1, metadata={"help": "Fraction of the images for test (ignored when pre-split)."})
    split_seed: Optional[int] = field(default=None, metadata={"help": "Seed of the stratified split; default: seed."})
    data_check: bool = field(default=True, metadata={
        "help": "Decode every image once before training: list unreadable files, hash pixels for the leakage guard."})
    on_bad_image: str = field(default="error", metadata={
        "help": "error: stop before training, listing unreadable images (data_report.json). skip: train without them."})
    dedupe: bool = field(default=True, metadata={
        "help": "Keep each group of exact/near duplicate images inside one split (needs data_check)."})
    near_duplicate_distance: Optional[int] = field(default=4, metadata={
        "help": "Max Hamming distance of 64-bit perceptual hashes for near duplicates; null: exact copies only."})
    group_regex: Optional[str] = field(default=None, metadata={
        "help": "Regex searched in each file name; its first group (or the match) is a patient id kept in one "
                "split, e.g. 'SOB_[BM]_[A-Z]+-(\\d+-\\d+)' for BreaKHis."})
    cross_split_duplicates: str = field(default="remove", metadata={
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
    train_accuracy: str = field(default="running", metadata={
        "help": "running: counted during the training pass (augmented, no extra cost). full: an extra "
                "eval-mode pass over the training set at each epoch end (the paper's definition)."})


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


GROUPS = {"model": ModelArguments, "data": DataArguments, "schedule": ScheduleArguments,
          "training": MedTrainingArguments}


@dataclass
class Recipe:
    model: ModelArguments
    data: DataArguments
    schedule: ScheduleArguments
    training: MedTrainingArguments
    resolved: dict  # what to write back: every field of our groups, the TrainingArguments keys that were set


def _fields() -> dict[str, tuple[str, Any]]:
    """key -> (group, type) over all groups; a key appearing twice would be ambiguous."""
    out = {}
    for group, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_"):
                assert f.name not in out, f"recipe key {f.name} belongs to two groups"
                out[f.name] = (group, hints[f.name])
    return out


def _accepts(tp, value) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value in {m.value for m in tp}
    if origin is typing.Literal:
        return value in args
    if tp is list or origin is list:
        return isinstance(value, list) and (not args or all(_accepts(args[0], v) for v in value))
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return True  # exotic types: left to the dataclass's own validation


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + "/".join(str(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _parse_override(raw: str, tp):
    """A command-line value: JSON when it parses and fits the field, else the plain string."""
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = {"True": True, "False": False, "None": None}.get(raw, raw)
    return parsed if _accepts(tp, parsed) else raw


def _overrides(argv: list[str], fields: dict, where: str) -> dict:
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise RecipeError(f"{where}: unexpected argument '{arg}'; overrides are written --key value")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise RecipeError(f"{where}: --{key} needs a value (--{key} VALUE)")
            raw, i = argv[i + 1], i + 1
        _check_key(key, fields, where)
        out[key] = _parse_override(raw, fields[key][1])
        i += 1
    return out


def _check_key(key: str, fields: dict, where: str) -> None:
    if key not in fields:
        near = difflib.get_close_matches(key, fields, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else "; see the recipe reference in README.md"
        raise RecipeError(f"{where}: unknown key '{key}'{hint}")


def load_recipe(path: str | Path, argv: Optional[list[str]] = None) -> Recipe:
    """Read ``path``, apply ``argv`` overrides (``--key value``), validate, build the dataclasses."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found; pass the path of a JSON recipe, e.g. recipes/demo_brain_lite0.json") from None
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a JSON object of key: value pairs, got {type(raw).__name__}")
    fields = _fields()
    for key in raw:
        _check_key(key, fields, str(path))
    values = {**raw, **_overrides(list(argv or []), fields, "command line")}
    for key, value in values.items():
        tp = fields[key][1]
        if not _accepts(tp, value):
            raise RecipeError(f"{path}: '{key}' must be {_type_name(tp)}, got {json.dumps(value)}")
    values.setdefault("output_dir", str(Path("outputs") / path.stem))

    groups = {g: {k: v for k, v in values.items() if fields[k][0] == g} for g in GROUPS}
    try:
        model, data, schedule = (GROUPS[g](**groups[g]) for g in ("model", "data", "schedule"))
        _validate(model, data, schedule, path)
        training = MedTrainingArguments(**groups["training"])
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None
    given_training = {k: v for k, v in groups["training"].items() if "token" not in k}  # never write secrets
    resolved = {**dataclasses.asdict(model), **dataclasses.asdict(data), **dataclasses.asdict(schedule),
                **given_training}
    return Recipe(model, data, schedule, training, resolved)


def _validate(model: ModelArguments, data: DataArguments, schedule: ScheduleArguments, path: Path) -> None:
    def bad(msg):
        raise RecipeError(f"{path}: {msg}")

    if not model.model_name_or_path:
        bad("'model_name_or_path' is required: a Hub id or a local checkpoint directory")
    if model.finetune_strategy not in FINETUNE_STRATEGIES:
        bad(f"'finetune_strategy' must be one of {', '.join(FINETUNE_STRATEGIES)}, got '{model.finetune_strategy}'")
    if schedule.train_accuracy not in TRAIN_ACCURACY_MODES:
        bad(f"'train_accuracy' must be one of {', '.join(TRAIN_ACCURACY_MODES)}, got '{schedule.train_accuracy}'")
    sources = [k for k in ("data_dir", "train_dir", "csv_file", "npz_file") if getattr(data, k)]
    if len(sources) != 1 and not (data.test_dir and sources == []):
        bad("give exactly one data source: 'data_dir' (class folders), 'train_dir' + 'test_dir' (pre-split), "
            f"'csv_file' or 'npz_file'; got {', '.join(sources) or 'none'}")
    if data.train_dir and not data.test_dir or data.test_dir and not data.train_dir:
        bad("a pre-split layout needs both 'train_dir' and 'test_dir'")
    for key in ("val_ratio", "test_ratio"):
        if not 0.0 < getattr(data, key) < 1.0:
            bad(f"'{key}' must lie strictly between 0 and 1, got {getattr(data, key)}")
    if data.val_ratio + data.test_ratio >= 1.0:
        bad(f"'val_ratio' + 'test_ratio' must be below 1, got {data.val_ratio + data.test_ratio}")
    if data.on_bad_image not in ("error", "skip"):
        bad(f"'on_bad_image' must be 'error' or 'skip', got '{data.on_bad_image}'")
    if data.cross_split_duplicates not in ("remove", "keep"):
        bad(f"'cross_split_duplicates' must be 'remove' or 'keep', got '{data.cross_split_duplicates}'")
    if data.near_duplicate_distance is not None and not 0 <= data.near_duplicate_distance <= 32:
        bad(f"'near_duplicate_distance' must lie in 0..32 or be null, got {data.near_duplicate_distance}")
    if data.group_regex:
        try:
            re.compile(data.group_regex)
        except re.error as e:
            bad(f"'group_regex' is not a valid regular expression ({e})")
    if data.image_size is not None and data.image_size < 8:
        bad(f"'image_size' must be at least 8 pixels, got {data.image_size}")
    if not 0.0 < data.crop_scale_min <= 1.0:
        bad(f"'crop_scale_min' must lie in (0, 1], got {data.crop_scale_min}")
    if not 0.0 <= data.hflip_prob <= 1.0:
        bad(f"'hflip_prob' must lie in [0, 1], got {data.hflip_prob}")
    try:
        from hf_medtl.schedule import AdaptiveSchedule

        AdaptiveSchedule(schedule.threshold, schedule.patience, schedule.stop_patience, schedule.factor)
    except ValueError as e:
        bad(str(e))


def write_resolved(recipe: Recipe, output_dir: str | Path) -> Path:
    out = Path(output_dir) / "recipe.json"
    out.write_text(json.dumps(recipe.resolved, indent=2, default=str) + "\n")
    return out


def reference_markdown() -> str:
    """The README's recipe reference, from the dataclasses' own help text."""
    lines = []
    for group, cls in GROUPS.items():
        own = [f for f in dataclasses.fields(cls) if group != "training" or f.name in cls.__dict__["__annotations__"]]
        title = (f"**{cls.__name__}**" if group != "training" else
                 "**TrainingArguments** (any field of `transformers.TrainingArguments`; these defaults differ from transformers')")
        lines += ["", title, "", "| key | default | meaning |", "|---|---|---|"]
        for f in own:
            default = getattr(f.default, "value", f.default)
            lines.append(f"| `{f.name}` | `{json.dumps(default)}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown())
