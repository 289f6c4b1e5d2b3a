"""Hugging Face datasets as a data source (``dataset_name``): a Hub id, a ``save_to_disk`` folder, parquet files or an
``imagefolder`` with metadata.csv/.jsonl, read into Samples, so that the data check, leakage guard, manifest and
image cache treat them as any other source. ``datasets`` is imported only when a dataset is read."""
from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from hf_medtl.data.groups import group_id
from hf_medtl.data.types import DataError, Sample, Source, inside

# A dataset's own split names -> the toolkit's; other splits (e.g. 'unlabeled') are not used.
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # kept as they are: decode windows them as 16-bit images
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class DatasetColumns(NamedTuple):
    """The columns to read; ``group_given``: the recipe named the group column (or null) itself.
    ``patient_like``: column names that stop the run when left unused (patients.PATIENT_LIKE, passed in by the
    caller: this module must not import sources, which dispatches to it)."""

    image: str = "image"
    label: str = "label"
    group: Optional[str] = None
    group_given: bool = True
    patient_like: Optional[re.Pattern] = None


def local_kind(path) -> Optional[str]:
    """'disk' (a save_to_disk folder), 'parquet' (a .parquet file or a folder of them), 'imagefolder' (images with
    metadata.csv/.jsonl at the top or in split folders), or None when ``path`` is no local dataset."""
    p = Path(str(path)).expanduser()
    if p.is_file():
        return "parquet" if p.suffix.lower() == ".parquet" else None
    if not p.is_dir():
        return None
    if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
        return "disk"
    folders = [p, *(d for d in p.iterdir() if d.is_dir())]
    if any((d / f"metadata.{ext}").is_file() for d in folders for ext in ("csv", "jsonl")):
        return "imagefolder"
    # The top and one level down (the Hub's data/train-*.parquet): no walk through a large image tree.
    return "parquet" if any(True for pattern in ("*.parquet", "*/*.parquet") for _ in p.glob(pattern)) else None


def hub_id(name) -> Optional[str]:
    """``name`` when it names a Hub dataset rather than a local path (the model card links it), else None."""
    if not name or Path(str(name)).expanduser().exists() or not HUB_ID.match(str(name)):
        return None
    return str(name)


def load(name: str, config: Optional[str] = None) -> dict:
    """The dataset as {its split name: datasets.Dataset}; a single Dataset is its 'train' split."""
    import datasets

    kind, path = local_kind(name), Path(str(name)).expanduser()
    if kind is None and path.exists():
        raise DataError(f"dataset_name '{name}': not a dataset (a save_to_disk folder, parquet files, or images with "
                        "metadata.csv/.jsonl); class folders are data_dir, a label CSV csv_file")
    try:
        if kind == "disk":
            ds = datasets.load_from_disk(str(path))
        elif kind == "parquet":
            ds = datasets.load_dataset("parquet", **({"data_files": str(path)} if path.is_file() else {"data_dir": str(path)}))
        elif kind == "imagefolder":
            ds = datasets.load_dataset("imagefolder", data_dir=str(path))
        else:
            ds = datasets.load_dataset(name, config)
    except Exception as e:  # datasets and pyarrow raise many types for a broken or foreign folder: one line each
        if kind is None and isinstance(e, (ConnectionError, FileNotFoundError)):  # incl. DatasetNotFoundError
            offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
            raise DataError(f"dataset_name '{name}': not a local dataset, and not found on the Hub or not reachable"
                            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}; download it where the Hub is reachable "
                            "(save_to_disk) and pass the local copy's folder") from None
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
        raise DataError(f"dataset_name '{name}': not readable as a dataset ({type(e).__name__}: {detail})") from None
    return dict(ds) if isinstance(ds, dict) else {"train": ds}


def _used_columns(where: str, names: list[str], cols: DatasetColumns, values_of=lambda c: None) -> DatasetColumns:
    """The columns to read (group None when the dataset has no patient column); a missing one, or a patient-like
    column the recipe did not account for (by name, or by its values: ``values_of(column)``), stops the run."""
    for key, col in (("image_column", cols.image), ("label_column", cols.label)):
        if col not in names:
            raise DataError(f"{where}: no column '{col}' (set {key} to yours); it has {', '.join(names)}")
    if cols.group_given and cols.group is not None and cols.group not in names:
        raise DataError(f"{where}: group_column '{cols.group}' is not a column; it has {', '.join(names)}")
    if not cols.group_given and cols.group not in names:
        if cols.patient_like is not None:
            from hf_medtl.data.patients import patient_column_error, unused_patient_column

            found = unused_patient_column(names, (cols.image, cols.label), values_of)
            if found:
                raise patient_column_error(where, *found)
        return cols._replace(group=None)
    return cols


def _label(value, names: Optional[list[str]], where: str) -> str:
    """A row's class: a ClassLabel's name, else the value as text."""
    if isinstance(value, (list, tuple, dict)):
        raise DataError(f"{where}: the label is a {type(value).__name__}; one class per image is expected "
                        "(multi-label data: multilabel_csv)")
    if value is None or (names is not None and not 0 <= value < len(names)) or str(value).strip() == "":
        raise DataError(f"{where}: no label ({value!r}); label every image of the split or leave the split out")
    return names[value] if names is not None else str(value).strip()


def _pixels(data: bytes, max_pixels: Optional[int], where: str) -> np.ndarray:
    """An encoded image as the array decode would make of its file: EXIF orientation applied, 16/32-bit modes kept
    for the windowing rule, 8-bit grey kept, anything else (palette, alpha, CMYK) as RGB."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            if max_pixels and img.width * img.height > max_pixels:  # from the header, before decoding
                raise DataError(f"{where}: image too large ({img.width}x{img.height} pixels, max_image_pixels "
                                f"{max_pixels})")
            img = ImageOps.exif_transpose(img)
            return np.asarray(img if img.mode in ("L", *HIGH_BIT_MODES) else img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = "not an image" if "cannot identify" in str(e) else "corrupt or truncated"
        raise DataError(f"{where}: image unreadable ({reason})") from None


def dataset_folder(name) -> Optional[Path]:
    """The folder a local dataset's relative image paths are relative to (a save_to_disk or parquet folder, a
    parquet file's folder), resolved; None for a Hub dataset."""
    local = Path(str(name)).expanduser()
    if not local.exists():
        return None
    return (local if local.is_dir() else local.parent).resolve()


def _split_samples(name: str, split: str, ds, cols: DatasetColumns, max_pixels: Optional[int],
                   allow_outside: bool = False):
    """One split's Samples and its ClassLabel names or None. A cell's stored bytes are its image (held in memory;
    its path is then only the original file's name); a cell with only a path names a file, relative to the
    dataset's folder (never the working directory: run from a folder holding files of the same names, the run
    would train on those) and inside it unless ``allow_outside`` (allow_paths_outside_root), as a CSV's paths."""
    import datasets

    where = f"dataset_name '{name}', split '{split}'"
    def values_of(column: str):  # a column of strings or numbers, for the patient-id check
        return ds[column] if isinstance(ds.features.get(column), datasets.Value) else None

    cols = _used_columns(where, list(ds.column_names), cols, values_of)
    feature = ds.features[cols.label]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    try:  # undecoded: the path and bytes as stored, so that a local file is read by the toolkit's own decode
        ds = ds.select_columns([c for c in (cols.image, cols.label, cols.group) if c]).cast_column(
            cols.image, datasets.Image(decode=False))
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: column '{cols.image}' holds no images ({type(e).__name__}); set image_column "
                        f"to the image column") from None
    folder = dataset_folder(name)
    samples = []
    for i, row in enumerate(ds):
        at, cell = f"{where}, row {i}", row[cols.image] or {}
        label = _label(row[cols.label], names, at)
        group = group_id(row[cols.group], at, cols.group) if cols.group else None
        path = cell.get("path")
        if cell.get("bytes"):
            samples.append(Sample(Path(f"{name}::{split}/{i}"), label, _pixels(cell["bytes"], max_pixels, at), group))
        elif path:
            if not Path(path).is_absolute() and folder is None:  # a Hub dataset's relative name: relative to nothing
                raise DataError(f"{at}: no image (file '{path}' is a relative path, and the dataset is no local folder)")
            file = Path(path) if Path(path).is_absolute() else folder / path
            if folder is not None:
                inside(file, folder, allow_outside, at)
            if not file.is_file():
                raise DataError(f"{at}: no image (file '{path}' not found"
                                f"{'' if Path(path).is_absolute() else f' in {folder}'})")
            samples.append(Sample(file, label, group=group))
        else:
            raise DataError(f"{at}: no image (empty cell)")
    return samples, names


def read_dataset(name: str, config: Optional[str], cols: DatasetColumns, max_pixels: Optional[int],
                 allow_outside: bool = False):
    """{toolkit split (train / validation / test): Samples} and the class names in their dataset order."""
    parts, found, read, labels_of = load(name, config), {}, {}, {}
    for split, ds in parts.items():
        if split not in SPLIT_ALIASES:
            logging.getLogger("hf_medtl").warning(f"dataset_name '{name}': split '{split}' is not used (only train, "
                                                  "validation and test are)")
            continue
        samples, read[split] = _split_samples(name, split, ds, cols, max_pixels, allow_outside)
        labels_of[split] = {s.label for s in samples}
        found.setdefault(SPLIT_ALIASES[split], []).extend(samples)
    if "train" not in found:
        raise DataError(f"dataset_name '{name}': no train split; it has {', '.join(parts) or 'none'}")
    names = _same_classes(name, read, labels_of, cols.label)
    labels = {s.label for items in found.values() for s in items}
    classes = [c for c in names if c in labels] if names is not None else sorted(labels)
    return found, classes


def _same_classes(name: str, class_labels: dict, labels: dict, column: str) -> Optional[list[str]]:
    """The class names of the dataset's first ClassLabel split (None when no split is one), after checking that
    every split names its classes among them: a split re-exported with the ids as ints (or with other strings)
    beside a ClassLabel split would otherwise be read as classes '0', '1'... that the model has no head for.
    Without a ClassLabel, a split whose labels share none with train's is the same refusal (written two ways).
    ``class_labels``: {split: its ClassLabel names or None}; ``labels``: {split: the labels read from it}."""
    named = [(split, names) for split, names in class_labels.items() if names is not None]
    train = next(split for split in labels if SPLIT_ALIASES[split] == "train")
    first = named[0] if named else (train, labels[train])
    reference = set(first[1])
    for split, found in labels.items():
        stray = sorted(found - reference, key=str)
        if not stray or (not named and split == first[0]):
            continue
        shown = ", ".join(repr(v) for v in stray[:4]) + (f" (and {len(stray) - 4} more)" if len(stray) > 4 else "")
        if named:
            ref, ref_names = named[0]
            ids = all(v.lstrip("-").isdigit() for v in stray)
            raise DataError(
                f"dataset_name '{name}': split '{split}' has labels {shown} that are not among the class names of "
                f"split '{ref}' (a ClassLabel: {', '.join(ref_names)}){' (they look like class ids)' if ids else ''}; "
                f"give every split the same ClassLabel (ds.cast_column('{column}', "
                f"datasets.ClassLabel(names=[...])) before saving) or write the labels as those names")
        if not found & reference:  # nothing in common: the same classes written two ways
            raise DataError(f"dataset_name '{name}': split '{split}' labels ({shown}) share no class with split "
                            f"'{first[0]}' ({', '.join(sorted(reference)[:4])}); write every split's labels alike "
                            "(the same names, or one ClassLabel)")
    return list(named[0][1]) if named else None


def scan_dataset(a, group: Optional[str], group_given: bool, patient_like: re.Pattern) -> Source:
    """The recipe's dataset (DataArguments ``a``; the group column as sources.columns_of reads it): its own
    validation/test splits kept, the missing ones carved out of train by val_ratio / test_ratio (train is then
    free, as a data_dir's images are)."""
    cols = DatasetColumns(a.image_column, a.label_column, group, group_given, patient_like)
    found, classes = read_dataset(a.dataset_name, a.dataset_config_name, cols, a.max_image_pixels,
                                  a.allow_paths_outside_root)
    ratios = {k: r for k, r in (("validation", a.val_ratio), ("test", a.test_ratio)) if k not in found}
    samples = [s for items in found.values() for s in items]
    fixed = [None if split == "train" and ratios else split for split, items in found.items() for _ in items]
    root = dataset_folder(a.dataset_name)
    if root is None:  # a Hub dataset: its files (if any are kept as files) live in the datasets cache
        import datasets

        root = Path(datasets.config.HF_DATASETS_CACHE)
    return Source(root, samples, fixed, ratios, [], classes)


def read_split(data, split: str, cols: DatasetColumns = DatasetColumns(), allow_outside: bool = False) -> list[Sample]:
    """One split of a local dataset for `hf-medtl evaluate` (``cols``: the run's image / label / group columns;
    'val' finds a validation split by any of its names)."""
    parts = load(str(data))
    wanted = SPLIT_ALIASES.get(split, split)
    chosen = [s for s in parts if SPLIT_ALIASES.get(s, s) == wanted]
    if not chosen:
        raise DataError(f"{data}: no '{split}' split; it has {', '.join(parts)}; pass --split with one of them")
    if cols.group == "group":  # the recipe's default, not a column it named: as for a CSV (sources.columns_of)
        cols = cols._replace(group_given=False)
    return _split_samples(str(data), chosen[0], parts[chosen[0]], cols, None, allow_outside)[0]
