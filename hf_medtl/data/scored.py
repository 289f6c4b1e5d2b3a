"""The data a saved model is scored on (evaluate, the robustness study): any path the toolkit reads — a folder of
class sub-folders, a label CSV, one split of a MedMNIST .npz or of a Hugging Face dataset, a multi-label CSV — read
with the run's data keys and checked against the model's classes; unreadable images by the data check's rule
(check.unreadable); and the evaluation dataset, through the image cache as a run's."""
from __future__ import annotations

import logging
from pathlib import Path

from hf_medtl.data.medmnist import read_medmnist_npz
from hf_medtl.data.sources import Columns, nifti_slices, read_label_csv, scan_class_folders
from hf_medtl.data.types import DataError

logger = logging.getLogger("hf_medtl")


def load_samples(data: str | Path, split: str, model_classes: list[str], file_pattern: str = "**/*",
                 allow_outside: bool = False, keys=None):
    """The samples of ``data``: a folder of class sub-folders, a label CSV, one split of a MedMNIST .npz, or one
    split of a Hugging Face dataset (a save_to_disk folder, parquet files, an imagefolder with metadata), read with
    the run's data ``keys`` (config/saved.py: columns, the NIfTI slice; DataArguments' defaults when None)."""
    from hf_medtl.config.saved import data_keys

    keys = keys or data_keys()
    samples = nifti_slices(_read(data, split, model_classes, file_pattern, allow_outside, keys), keys)
    unknown = sorted({s.label for s in samples} - set(model_classes))
    if unknown:
        raise DataError(f"{data}: class(es) {unknown} are not among the model's labels {model_classes}; "
                        "rename the folders/labels to the model's class names")
    return samples


def _read(data, split, model_classes, file_pattern, allow_outside, keys):
    """Dispatch on what the path is (the recipe's sources are dispatched on its keys: sources.scan_source)."""
    from hf_medtl.data.hf_datasets import DatasetColumns, local_kind, read_split

    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: not found; pass a folder of class sub-folders, a label CSV, a .npz or a dataset "
                        "(save_to_disk folder, parquet, imagefolder with metadata.csv)")
    if local_kind(data):
        return read_split(data, split, DatasetColumns(keys.image_column, keys.label_column, keys.group_column),
                          allow_outside)
    elif data.suffix == ".npz":
        parts = read_medmnist_npz(data, model_classes, only=split)  # integer labels are the model's ids
        key = {"val": "validation"}.get(split, split)
        if key not in parts:
            raise DataError(f"{data}: no '{split}' split ({split}_images / {split}_labels arrays)")
        return parts[key]
    if data.suffix == ".csv":  # (a patient column is the run's group column, or named with --group_column)
        cols = Columns(keys.path_column, keys.label_column, keys.group_column,
                       keys.sources["group_column"] == "flag" or keys.group_column != "group", key="--group_column")
        return read_label_csv(data, allow_outside, min_classes=1, columns=cols).samples
    return scan_class_folders(data, file_pattern, "data", allow_outside).samples


def multilabel_samples(data, classes: list[str], allow_outside: bool):
    """The samples of a multi-label CSV (one 0/1 column per finding, or ChestX-ray14's form) for a model with
    findings ``classes``."""
    from hf_medtl.data.multilabel import read_multilabel_csv

    if Path(data).suffix != ".csv":
        raise DataError(f"{data}: a multi-label model is scored on a multi-label CSV (path + one 0/1 column per "
                        "finding, or ChestX-ray14's Data_Entry form)")
    samples, found = read_multilabel_csv(data, allow_outside)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{data}: finding(s) {unknown} are not among the model's labels {classes}")
    # A finding the CSV does not hold would be scored as all-negative and averaged into the macro scores as if
    # the CSV had said so. (ChestX-ray's form lists only the findings an image has: one that no row names cannot
    # be told from one that was never labelled.)
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(f"{data}: the model's finding(s) {missing} are missing from the CSV (no 0/1 column, or no "
                        "row's 'Finding Labels' names them) and would be scored as all-negative; score on a CSV "
                        "that labels every finding of the model")
    return samples


def readable_samples(samples, data, on_bad_image: str, max_pixels: int):
    """The data check's rules: every image decoded once; unreadable ones stop the command or are skipped.
    Returns the readable samples and their pixel hashes (the image cache's keys)."""
    from hf_medtl.data.check import inspect_all, unreadable

    infos = inspect_all([s.source for s in samples], max_pixels)
    bad = [(s, i.reason) for s, i in zip(samples, infos) if not i.ok]
    if bad and on_bad_image == "error":
        raise DataError(f"{data}: {unreadable(len(bad), bad[0][0].path, bad[0][1])}; fix or remove them, or pass "
                        "--on_bad_image skip")
    if bad:
        logger.warning(f"{len(bad)} unreadable image(s) skipped, e.g. '{bad[0][0].path}' ({bad[0][1]})")
    return [s for s, i in zip(samples, infos) if i.ok], [i.sha for i in infos if i.ok]


def eval_dataset(samples, shas, classes, processor, max_pixels, data_cache: bool, data_cache_dir,
                 multi_label: bool = False):
    """The evaluation dataset: the saved processor's pixels, from the image cache when it is on."""
    from hf_medtl.data.dataset import cached_loaders, image_dataset, multilabel_dataset, sample_keys
    from hf_medtl.data.transforms import build_transforms, preprocessing_from_processor

    prep = preprocessing_from_processor(processor)
    _, eval_tf = build_transforms(prep, augment=False)
    load = None
    if data_cache:
        load, _ = cached_loaders(samples, sample_keys(samples, shas), prep, data_cache_dir, max_pixels)
    make = multilabel_dataset if multi_label else image_dataset
    return make(samples, classes, eval_tf, max_pixels, load=load)
