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
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from hf_medtl.config.arguments import (DataArguments, EvaluationArguments, ModelArguments,  # noqa: F401
                                       ScheduleArguments, StudyArguments)
from hf_medtl.config.presets import PRESETS, resolve_auto
from hf_medtl.config.training_arguments import GROUPS, MedTrainingArguments
from hf_medtl.config.validation import validate, validate_knn_schedule, validate_model, validate_study
from hf_medtl.errors import HfMedtlError

class RecipeError(HfMedtlError):
    pass


@dataclass
class Recipe:
    model: ModelArguments
    data: DataArguments
    schedule: ScheduleArguments
    evaluation: EvaluationArguments
    study: StudyArguments
    training: MedTrainingArguments
    resolved: dict  # what to write back: every field of our groups, the TrainingArguments keys that were set


def recipe_fields() -> dict[str, tuple[str, Any]]:
    """key -> (group, type) over all groups; a key appearing twice would be ambiguous."""
    out = {}
    for group, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_"):
                if f.name in out:  # a programming error in the dataclasses, not a user's: fail loudly at import
                    raise TypeError(f"recipe key {f.name} belongs to two groups")
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
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + "/".join(str(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _finite(value) -> bool:
    """No NaN or infinity anywhere in a recipe value (lists and search-space dicts included)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _shown(key: str, value) -> str:
    """A value as an error message may show it: never a secret's."""
    return "<hidden>" if "token" in key else json.dumps(value)


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
        check_key(key, fields, where)
        out[key] = _parse_override(raw, fields[key][1])
        i += 1
    return out


def check_key(key: str, fields: dict, where: str) -> None:
    if key not in fields:
        near = difflib.get_close_matches(key, fields, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else "; see the recipe reference in docs/recipes.md"
        raise RecipeError(f"{where}: unknown key '{key}'{hint}")


def _read(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found; pass the path of a JSON recipe, e.g. recipes/demo_brain_lite0.json") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a folder; pass the path of a JSON recipe file inside it") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text; a recipe is a JSON file") from None
    except PermissionError:
        raise RecipeError(f"{path}: not readable (permission denied)") from None
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a JSON object of key: value pairs, got {type(raw).__name__}")
    return raw


def load_recipe(path: str | Path, argv: Optional[list[str]] = None) -> Recipe:
    """Read ``path``, apply ``argv`` overrides (``--key value``), validate, build the dataclasses."""
    path = Path(path)
    raw = _read(path)
    fields = recipe_fields()
    for key in raw:
        check_key(key, fields, str(path))
    overrides = _overrides(list(argv or []), fields, "command line")
    values = {**raw, **overrides}
    for key, value in values.items():
        tp = fields[key][1]
        where = f"command line: --{key}" if key in overrides else f"{path}: '{key}'"
        if not _accepts(tp, value):
            raise RecipeError(f"{where} must be {_type_name(tp)}, got {_shown(key, value)}")
        if not _finite(value):  # JSON's NaN / Infinity tokens: every range check would let them through
            raise RecipeError(f"{where} must be a finite number, got {_shown(key, value)}")
    if values.get("preset"):  # the preset's values for every key the recipe and the command line leave out
        values = {**PRESETS[values["preset"]], **values}
    values.setdefault("output_dir", str(Path("outputs") / path.stem))
    values = resolve_auto(values)  # written resolved into recipe.json, so a rerun of it matches

    groups = {g: {k: v for k, v in values.items() if fields[k][0] == g} for g in GROUPS}
    try:
        parts = {g: GROUPS[g](**groups[g]) for g in GROUPS if g != "training"}
        validate(parts["data"], parts["schedule"], groups["training"])
        validate_model(parts["model"], parts["data"])
        validate_study(parts["study"], parts["data"], parts["model"])
        validate_knn_schedule(parts["model"], parts["schedule"])
        training = MedTrainingArguments(**groups["training"])
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0]
        named = re.search(r"'(\w+)'", msg)  # the key the message names, to blame the right source
        raise RecipeError(f"{'command line' if named and named.group(1) in overrides else path}: {msg}") from None
    given_training = {k: v for k, v in groups["training"].items() if "token" not in k}  # never write secrets
    resolved = {k: v for part in parts.values() for k, v in dataclasses.asdict(part).items()}
    return Recipe(**parts, training=training, resolved={**resolved, **given_training})


def require_model(recipe: Recipe, path: str | Path) -> None:
    """Commands that build a model need a backbone; the data check does not."""
    if not recipe.model.model_name_or_path:
        raise RecipeError(f"{path}: 'model_name_or_path' is required: a Hub id or a local checkpoint directory")


GENERIC_NAMES = {"training", "train", "testing", "test", "labels", "label", "metadata"}


def dataset_name(resolved: dict) -> str:
    """A dataset's display name from its recipe source (data_dir, train_dir, csv_file, npz_file, multilabel_csv,
    the dataset_name key): a Hub dataset id as it is, else the first folder or file name that says something
    (Kaggle's Training/, a labels.csv say nothing). Never a path."""
    keys = ("data_dir", "train_dir", "csv_file", "npz_file", "multilabel_csv", "dataset_name")
    source = next((resolved.get(k) for k in keys if resolved.get(k)), None)
    if not source:
        return "unknown"
    if source == resolved.get("dataset_name") and not Path(str(source)).expanduser().exists():
        return str(source)  # a Hub id (org/name) names the data better than any part of it
    path = Path(str(source).split("::")[0]).expanduser().resolve()
    while path.stem.lower() in GENERIC_NAMES and path.parent != path:
        path = path.parent
    return path.stem or "unknown"


# Keys that say how a run is driven, not what it trains: a finished run or a checkpoint stands for the recipe
# whatever they say.
HOW_IT_RUNS = {"resume_from_checkpoint", "disable_tqdm", "push_to_hub", "hub_model_id", "hub_private_repo", "report_to"}


def recipe_difference(before: dict, now: dict, ignore=()) -> str | None:
    """The first key (sorted) on which two resolved recipes differ, as "key: <before> there, <now> now"; None when
    they agree on everything but HOW_IT_RUNS and ``ignore``."""
    changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k) and k not in HOW_IT_RUNS
                     and k not in ignore)
    if not changed:
        return None
    k = changed[0]
    return f"{k}: {json.dumps(before.get(k))} there, {json.dumps(now.get(k))} now"


def write_resolved(recipe: Recipe, output_dir: str | Path) -> Path:
    out = Path(output_dir) / "recipe.json"
    out.write_text(json.dumps(recipe.resolved, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":  # docs/recipes.md
    from hf_medtl.config.reference import reference_markdown

    print(reference_markdown())
