"""MedMNIST ``.npz`` archives: ``{train,val,test}_images`` / ``_labels`` arrays, every array checked (numeric,
matching lengths, class ids 0..K-1) before any work."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from hf_medtl.data.types import DataError, Sample

NPZ_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _npz_arrays(npz_file: Path):
    with open(npz_file, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive
            raise DataError(f"npz_file '{npz_file}': not a readable .npz archive; MedMNIST layout expected "
                            "({train,val,test}_images / _labels as numeric arrays)")
    try:
        return np.load(npz_file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        reason = "object arrays are refused" if "allow_pickle" in str(e) else "not a readable .npz archive"
        raise DataError(f"npz_file '{npz_file}': {reason}; MedMNIST layout expected "
                        "({train,val,test}_images / _labels as numeric arrays)") from None


def read_medmnist_npz(npz_file: str | Path, class_names: Optional[list[str]] = None,
                      only: Optional[str] = None) -> dict[str, list[Sample]]:
    """MedMNIST ``{train,val,test}_images`` / ``_labels`` arrays: split name -> samples (images in memory).
    ``only`` ('train', 'val' or 'test') reads that split alone (a released test file holds only it)."""
    npz_file = Path(npz_file)
    if not npz_file.is_file():
        raise DataError(f"npz_file '{npz_file}': file not found")
    arrays = _npz_arrays(npz_file)
    out = {}
    for key, split in NPZ_SPLITS.items():
        if only not in (None, key, split) or f"{key}_images" not in arrays.files:
            continue
        where = f"npz_file '{npz_file}'"
        if f"{key}_labels" not in arrays.files:
            raise DataError(f"{where}: has {key}_images but no {key}_labels")
        try:
            images, labels = arrays[f"{key}_images"], np.asarray(arrays[f"{key}_labels"])
        except ValueError:
            raise DataError(f"{where}: {key} arrays are object arrays; store numeric arrays") from None
        if images.dtype.kind not in "uif" or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DataError(f"{where}: {key}_images must be numeric (N, H, W) or (N, H, W, 1|3), got "
                            f"{images.dtype} {images.shape}")
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise DataError(f"{where}: {key}_labels has {labels.shape[1]} columns (multi-label); "
                            "only single-label classification is supported")
        if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
            raise DataError(f"{where}: {key}_labels must be integer class ids, got {labels.dtype}")
        labels = labels.reshape(-1).astype(int)
        if len(labels) != len(images):
            raise DataError(f"{where}: {key}_images has {len(images)} images but {key}_labels has {len(labels)} "
                            "labels; they must match one to one")
        if len(labels) and labels.min() < 0:
            raise DataError(f"{where}: {key}_labels holds {labels.min()}; class ids must be 0..K-1")
        if class_names is not None and len(labels) and labels.max() >= len(class_names):
            raise DataError(f"{where}: {key}_labels holds {labels.max()} but class_names has {len(class_names)} names")
        names = class_names or [str(i) for i in range(int(labels.max(initial=0)) + 1)]
        out[split] = [Sample(Path(f"{npz_file}::{key}_images/{i}"), names[lab], images[i]) for i, lab in enumerate(labels)]
    if only is None and "train" not in out:
        raise DataError(f"npz_file '{npz_file}': no train_images/train_labels arrays (MedMNIST layout expected)")
    return out
