"""The data stage's vocabulary (a leaf: imports nothing of hf_medtl but the error base): a Sample, a Source of
samples, the one data error type, and the rule that keeps image paths inside their root."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from hf_medtl.errors import HfMedtlError

# The extensions datasets' imagefolder reads, plus DICOM and NIfTI (upper case matched too).
IMAGE_EXTENSIONS = {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".jfif", ".pgm", ".ppm", ".dcm",
                    ".dicom", ".nii", ".nii.gz"}


def is_image_name(path: Path) -> bool:
    """Whether a file name carries one of IMAGE_EXTENSIONS (".nii.gz" is two suffixes)."""
    name = path.name.lower()
    return path.suffix.lower() in IMAGE_EXTENSIONS or name.endswith(".nii.gz")


class DataError(HfMedtlError):
    pass


@dataclass(frozen=True, eq=False)
class Sample:
    path: Path  # a file, or for in-memory images (.npz) "<file>::<split>_images/<index>"
    label: str
    array: Optional[np.ndarray] = field(default=None, repr=False)
    group: Optional[str] = None  # e.g. a patient id from a CSV's group column

    @property
    def source(self):
        """What to decode: the in-memory array, or the file."""
        return self.path if self.array is None else self.array


@dataclass
class FolderScan:
    root: Path
    samples: list[Sample]
    ignored: list[Path]  # files in class folders that are not images by extension

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples})


def inside(path: Path, root: Path, allow_outside: bool, what: str) -> Path:
    """``path`` if it resolves (links and '..' followed) inside ``root``; refused otherwise unless allowed."""
    if not allow_outside:
        real, base = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            raise DataError(f"{what}: '{path}' lies outside '{root}'; move the file under it, or set "
                            "allow_paths_outside_root true if you mean it")
    return path


@dataclass
class Source:
    """What a recipe's data keys point at: the samples, which of them a source fixes to a split, and the
    ratios for the rest."""

    root: Path
    samples: list[Sample]
    fixed: list[Optional[str]]  # a split the source fixes (official test folder, MedMNIST val), or None
    ratios: dict[str, float]  # for the free samples
    ignored: list[Path]
    classes: list[str]
    multi_label: bool = False  # labels are '|'-joined finding sets (hf_medtl.data.multilabel)
