"""The data keys of a saved run, for the commands that read new data with its model (evaluate, predict): how the run
read its images (CSV columns, a dataset's columns, the NIfTI slice, the pixel limit) is how they read them, unless a
flag says otherwise. Precedence: a flag given > the run's recipe.json > DataArguments' defaults."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

from hf_medtl.config.arguments import DataArguments
from hf_medtl.errors import HfMedtlError

# What decides which file or column holds an image, its label and its patient, and which pixels it gives.
DATA_KEYS = ("path_column", "label_column", "group_column", "image_column", "nifti_slice", "nifti_axis",
             "max_image_pixels")
# Flags whose value "null" (or "none") means None, as in a recipe.
NULLABLE = {"group_column", "nifti_slice"}


def data_keys(model_dir: str | Path | None = None, given: dict | None = None) -> SimpleNamespace:
    """The DATA_KEYS for reading data with the saved model in ``model_dir`` (None: no run, the defaults);
    ``given``: the flags the user passed (None: not given). Each value also says where it came from (``sources``:
    key -> 'flag' | 'run' | 'default')."""
    defaults = {f.name: f.default for f in dataclasses.fields(DataArguments) if f.name in DATA_KEYS}
    given = given or {}
    recipe = Path(model_dir) / "recipe.json" if model_dir is not None else None
    try:
        saved = json.loads(recipe.read_text()) if recipe is not None and recipe.is_file() else {}
    except (OSError, ValueError) as e:
        raise HfMedtlError(f"{recipe}: unreadable ({e}); restore it from the run or delete it") from None
    values, sources = {}, {}
    for key in DATA_KEYS:
        if given.get(key) is not None:
            value = given[key]
            values[key], sources[key] = (None if key in NULLABLE and str(value).lower() in ("null", "none")
                                         else value), "flag"
        elif key in saved:
            values[key], sources[key] = saved[key], "run"
        else:
            values[key], sources[key] = defaults[key], "default"
    if isinstance(values["nifti_slice"], str) and values["nifti_slice"] != "middle":
        try:
            values["nifti_slice"] = int(values["nifti_slice"])
        except ValueError:
            raise HfMedtlError(f"--nifti_slice '{values['nifti_slice']}': an index along --nifti_axis, 'middle' or "
                               "null") from None
    if values["nifti_axis"] not in (0, 1, 2):
        raise HfMedtlError(f"--nifti_axis {values['nifti_axis']}: use 0, 1 or 2")
    return SimpleNamespace(**values, sources=sources)


def add_data_flags(parser, keys=DATA_KEYS[:-1]) -> None:
    """--path_column, --label_column, --group_column, --image_column, --nifti_slice, --nifti_axis (or the ``keys``
    given): each defaults to the saved run's own value (recipe.json), else DataArguments' default."""
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DataArguments)}
    for key in keys:
        parser.add_argument(f"--{key}", default=None, type=int if key == "nifti_axis" else str,
                            help=helps[key].replace("%", "%%") + " Default: the run's own (its recipe.json)."
                            + (" null: none." if key in NULLABLE else ""))
