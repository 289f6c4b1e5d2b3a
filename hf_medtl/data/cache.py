"""Decode once: every image decoded by the toolkit's rules (hf_medtl.data.decode) and resized once, kept in
``datasets`` Arrow tables that later epochs, later runs and ``hf-medtl evaluate`` read instead of the source
files. Augmentation still runs on the fly, on the cached copy.

Two copies per image, each in its own folder of the cache (a *variant*):
- ``eval``: squashed to the input size by the serving processor's own resize (PIL for timm's processor, the
  torchvision backend of HF processors, both on uint8). At evaluation the processor resizes an image that
  already has its size, which leaves it unchanged, so the cached path gives the same pixels as decoding the
  file (tested for timm, ViT, ResNet and ConvNeXt through pipeline()).
- ``train`` (only when augmenting): scaled down, aspect kept, until the smallest random crop still covers the
  input size; an image already that small is stored as decoded, so its crops are exactly the uncached ones.

An entry's key is the data check's hash of the decoded pixels (a file's bytes when the check is off), so a
changed file gets a new entry and every other entry is reused. Entries are written in chunks, each saved to a
temporary folder and renamed when complete: a killed build leaves no chunk that looks whole, and the next
run builds only what is missing. Location: ``data_cache_dir``, else ``$HF_MEDTL_IMAGE_CACHE``, else
``<HF_DATASETS_CACHE>/hf_medtl_images`` (``~/.cache/huggingface/datasets/hf_medtl_images``). Stale entries
are never served; delete the folder to reclaim the space.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from hf_medtl.data.decode import decode
from hf_medtl.data.types import DataError

logger = logging.getLogger("hf_medtl")

VERSION = 2  # of the decode rules and the stored layout: a change gives every entry a new variant folder
CHUNK = 1024  # entries per chunk: what a killed build loses at most
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
# RandomResizedCrop's smallest crop side, as a fraction of the image side: area crop_scale_min at aspect 3/4.
_MIN_RATIO = 3 / 4


def default_dir() -> Path:
    if os.environ.get("HF_MEDTL_IMAGE_CACHE"):
        return Path(os.environ["HF_MEDTL_IMAGE_CACHE"])
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_medtl_images"


@dataclass(frozen=True)
class Variant:
    """How a cached copy is made from the decoded image."""

    kind: str  # "eval" (squashed to size) or "train" (scaled down to at least margin x size, aspect kept)
    size: tuple[int, int]  # (height, width) of the model input
    interpolation: str
    crop_scale_min: float = 1.0
    backend: str = "pil"  # who resizes the eval copy: "pil", or "processor" (an HF processor's torchvision backend)

    @property
    def folder(self) -> str:
        h, w = self.size
        crop = f"-crop{self.crop_scale_min:g}" if self.kind == "train" else f"-{self.backend}"
        return f"v{VERSION}-{self.kind}-{h}x{w}-{self.interpolation}{crop}"

    def apply(self, img: Image.Image, processor=None) -> Image.Image:
        h, w = self.size
        resample = RESAMPLE[self.interpolation]
        if self.kind == "eval" and self.backend == "processor":
            out = processor(images=img, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
            return Image.fromarray(out.permute(1, 2, 0).numpy().astype(np.uint8), "RGB")
        if self.kind == "eval":
            return img.resize((w, h), resample)  # as torchvision's Resize does on a PIL image (timm)
        side = math.sqrt(self.crop_scale_min * _MIN_RATIO)  # smallest crop side / image side
        scale = max(h / side / img.height, w / side / img.width)
        if scale >= 1:
            return img
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)


def content_key(source) -> str:
    """A key for an image the data check did not hash: its file's bytes (or the array's)."""
    h = hashlib.sha1()
    if isinstance(source, np.ndarray):
        h.update(np.ascontiguousarray(source).tobytes() + repr(source.shape).encode())
    else:
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "file:" + h.hexdigest()


def eval_variant(prep) -> Variant:
    """The eval copy for a Preprocessing: resized as its processor resizes."""
    processor = prep.processor
    hf = processor is not None and not getattr(processor, "data_config", None) and hasattr(processor, "resample")
    return Variant("eval", prep.size, prep.interpolation, backend="processor" if hf else "pil")


def _encode(batch: dict, sources: list, variant: Variant, max_pixels: Optional[int], processor=None) -> dict:
    rows = {"key": batch["key"], "height": [], "width": [], "pixels": []}
    for i in batch["ref"]:
        img = variant.apply(decode(sources[i], max_pixels), processor)
        rows["height"].append(img.height)
        rows["width"].append(img.width)
        rows["pixels"].append(img.tobytes())  # raw RGB: read back without decompressing, straight from the map
    return rows


FEATURES = {"key": "string", "height": "int32", "width": "int32", "pixels": "large_binary"}


class ImageCache:
    """One variant's entries: key -> decoded, resized RGB PIL image, read from memory-mapped Arrow tables
    (zero-copy up to the PIL image)."""

    def __init__(self, folder: Path):
        import datasets

        self.folder = folder
        self._where: dict[str, tuple] = {}
        for chunk in sorted(folder.glob("chunk-*")) if folder.is_dir() else []:
            try:
                table = datasets.load_from_disk(str(chunk)).data.table
            except Exception as e:  # a chunk changed by hand or by a failing disk: say which, never guess
                raise DataError(f"image cache chunk '{chunk}' is unreadable ({type(e).__name__}); delete that folder "
                                "(its images are decoded again) or set data_cache false") from None
            keys = table.column("key").to_pylist()
            sizes = zip(table.column("width").to_pylist(), table.column("height").to_pylist())
            rows = [(part, i) for part in table.column("pixels").chunks for i in range(len(part))]
            for key, size, (part, i) in zip(keys, sizes, rows):
                self._where[key] = (part, i, size)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def image(self, key: str) -> Image.Image:
        part, i, size = self._where[key]
        return Image.frombuffer("RGB", size, part[i].as_buffer(), "raw", "RGB", 0, 1)


def build(keys: list[str], sources: list, variant: Variant, root: Path, max_pixels: Optional[int] = None,
          num_proc: Optional[int] = None, processor=None) -> tuple[ImageCache, int]:
    """(the variant's cache holding every key, how many entries this call decoded). Only missing keys are
    decoded: with ``num_proc`` processes (default: the CPU count, one process for a few hundred images)."""
    import datasets

    folder = Path(root) / variant.folder
    cache = ImageCache(folder)
    todo: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in cache and key not in todo:
            todo[key] = i
    if not todo:
        return cache, 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"image cache '{root}': cannot write there ({e.strerror or e}); set data_cache_dir (or "
                        "$HF_MEDTL_IMAGE_CACHE) to a writable folder, or data_cache false") from None
    _remove_abandoned(folder)
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, 8) if len(todo) >= 512 else 1
    items = list(todo.items())
    features = datasets.Features({name: datasets.Value(kind) for name, kind in FEATURES.items()})
    with _quiet_datasets():
        for start in range(0, len(items), CHUNK):
            part = items[start:start + CHUNK]
            table = datasets.Dataset.from_dict({"key": [k for k, _ in part], "ref": [i for _, i in part]})
            table = table.map(_encode, batched=True, batch_size=64, num_proc=num_proc if len(part) >= 256 else None,
                              remove_columns=["ref"], features=features, new_fingerprint=uuid.uuid4().hex,
                              fn_kwargs={"sources": sources, "variant": variant, "max_pixels": max_pixels,
                                         "processor": processor})
            tmp = folder / f".tmp-{uuid.uuid4().hex}"
            table.save_to_disk(str(tmp))
            os.replace(tmp, folder / f"chunk-{time.time_ns()}-{uuid.uuid4().hex[:8]}")  # complete, or absent
    return ImageCache(folder), len(todo)


class _quiet_datasets:
    """datasets' progress bars off while building (the run prints one line instead)."""

    def __enter__(self):
        import datasets

        self.was = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import datasets

        if self.was:
            datasets.utils.logging.enable_progress_bar()


def _remove_abandoned(folder: Path, older_than_s: float = 3600) -> None:
    """Temporary folders of killed builds (an hour old: a running build's are younger)."""
    for tmp in folder.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass
