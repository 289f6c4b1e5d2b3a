"""Data sources: where the images and their labels come from (a folder of class sub-folders, pre-split)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hf_medtl.errors import HfMedtlError

# The extensions datasets' imagefolder reads (upper case matched too).
IMAGE_EXTENSIONS = {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".jfif", ".pgm", ".ppm"}


class DataError(HfMedtlError):
    pass


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass
class FolderScan:
    root: Path
    samples: list[Sample]
    ignored: list[Path]  # files in class folders that are not images by extension

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples})


def scan_class_folders(root: str | Path, pattern: str = "**/*", key: str = "data_dir") -> FolderScan:
    """Every image under ``root/<class>/`` matching ``pattern``, sorted, so that a scan is reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{key} '{root}': folder not found; it should hold one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{key} '{root}': no class sub-folders; expected {root}/<class name>/<image files>")
    samples, ignored = [], []
    for name in classes:
        files = sorted(p for p in (root / name).glob(pattern) if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"{key} '{root}': class folder '{name}' holds no images matching '{pattern}'; "
                            "add images or remove the folder")
        samples += [Sample(p, name) for p in images]
    if len(classes) < 2:
        raise DataError(f"{key} '{root}': only one class ('{classes[0]}'); a classifier needs at least two")
    return FolderScan(root, samples, ignored)
