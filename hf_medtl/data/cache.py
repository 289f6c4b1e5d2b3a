"""Decode once: every image decoded by the toolkit's rules (hf_medtl.data.decode) and resized once, kept in
``datasets`` Arrow tables that later epochs, later runs and ``hf-medtl evaluate`` read instead of the source
files. Augmentation still runs on the fly, on the cached copy.

Two copies per image, each in its own folder of the cache (a *variant*):
- ``eval``: the decoded image after the serving processor's own geometry (resize, and crop where it crops),
  marked so that the processor applies only its intensity steps to it (hf_medtl.data.transforms: the split is
  checked on every image, bit for bit, and an image where it does not hold is stored as decoded). Its folder
  is named by a digest of every processor setting and library version that decides those pixels.
- ``train`` (only when augmenting): scaled down, aspect kept, until the smallest random crop still covers the
  input size; an image already that small is stored as decoded, so its crops are exactly the uncached ones.

Both folder names also hold a digest of the decode rules (decode.py's code, the readers' versions). An entry's
key is the data check's hash of the decoded pixels (a file's bytes when the check is off), so a changed file
gets a new entry and every other entry is reused. Entries are written in chunks, each saved to a temporary
folder and renamed when complete: a killed build leaves no chunk that looks whole, and the next run builds only
what is missing (removing the temporary folders of writers that are gone). Every entry carries a checksum of
its content (xxh3 of key, size and pixels): a build checks the entries it needs and decodes a damaged one again
(the new chunk's copy is the one read from then on), and every read checks the entry it serves, so flipped bytes
are never served as pixels. Decoding runs in worker processes
that die with the build (hf_medtl.data.workers). Location: ``data_cache_dir``, else ``$HF_MEDTL_IMAGE_CACHE``,
else ``<HF_DATASETS_CACHE>/hf_medtl_images``. Stale entries are never served; delete the folder to reclaim space.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
import xxhash  # (a dependency of datasets)
from PIL import Image

from hf_medtl.data import workers
from hf_medtl.data.cache_files import remove_abandoned, temporary_name, write_error
from hf_medtl.data.decode import decode
from hf_medtl.data.transforms import eval_transform, mark_prepared
from hf_medtl.data.types import DataError

VERSION = 4  # of the stored layout: a change gives every entry a new variant folder (4: entry checksums)
CHUNK = 1024  # entries per chunk: what a killed build loses at most
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
# RandomResizedCrop's smallest crop side, as a fraction of the image side: area crop_scale_min at aspect 3/4.
_MIN_RATIO = 3 / 4
DECODERS = ("pillow", "numpy", "pydicom", "pylibjpeg", "python-gdcm")  # what decode.py reads files with
SETTING = "data_cache_dir (or $HF_MEDTL_IMAGE_CACHE)"
logger = logging.getLogger("hf_medtl")


def default_dir() -> Path:
    if os.environ.get("HF_MEDTL_IMAGE_CACHE"):
        return Path(os.environ["HF_MEDTL_IMAGE_CACHE"])
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_medtl_images"


@functools.lru_cache(maxsize=None)
def decode_rules() -> str:
    """A digest of what turns a file's bytes into pixels: decode.py's code and its readers' versions (a key
    made of a file's bytes says nothing about how they were decoded)."""
    h = hashlib.sha1(Path(importlib.import_module("hf_medtl.data.decode").__file__).read_bytes())
    for name in DECODERS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{name}={metadata.version(name)};".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Variant:
    """How a cached copy is made from the decoded image."""

    kind: str  # "eval" (the processor's geometry) or "train" (scaled down to at least margin x size, aspect kept)
    size: tuple[int, int]  # (height, width) of the model input
    interpolation: str
    crop_scale_min: float = 1.0
    pixels: str = ""  # eval: the processor's pixels_key ("" : squashed with PIL, no processor)

    @property
    def folder(self) -> str:
        h, w = self.size
        what = repr((self.kind, self.size, self.interpolation, self.crop_scale_min, self.pixels, decode_rules()))
        return f"v{VERSION}-{self.kind}-{h}x{w}-{hashlib.sha1(what.encode()).hexdigest()[:16]}"

    def apply(self, img: Image.Image, transform=None) -> tuple[Image.Image, bool]:
        """(the copy to store, whether it went through ``transform``'s geometry)."""
        h, w = self.size
        resample = RESAMPLE[self.interpolation]
        if self.kind == "eval" and transform is not None:
            return transform.prepare(img)
        if self.kind == "eval":
            return img.resize((w, h), resample), False
        side = math.sqrt(self.crop_scale_min * _MIN_RATIO)  # smallest crop side / image side
        scale = max(h / side / img.height, w / side / img.width)
        if scale >= 1:
            return img, False
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample), False


def content_key(source) -> str:
    """A key for an image the data check did not hash: its file's bytes (or the array's)."""
    h = hashlib.sha1()
    if isinstance(source, np.ndarray):
        h.update(np.ascontiguousarray(source).tobytes() + repr((source.shape, source.dtype.str)).encode())
    else:
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "file:" + h.hexdigest()


def eval_variant(prep) -> Variant:
    """The eval copy for a Preprocessing: what its processor's geometry makes."""
    pixels = eval_transform(prep.processor).pixels_key if prep.processor is not None else ""
    return Variant("eval", prep.size, prep.interpolation, pixels=pixels)


def checksum(key: str, width: int, height: int, prepared: bool, pixels) -> int:
    """An entry's content checksum: xxh3 (several GB/s: a small share of a read) of everything the entry serves,
    so that a flipped byte in the pixels, a changed size or an entry under another key is seen."""
    h = xxhash.xxh3_64(f"{key}|{width}x{height}|{int(prepared)}|".encode())
    h.update(pixels)
    return h.intdigest() & (2 ** 63 - 1)  # 63 bits: an int64 column (datasets passes ints through int64)


def _encode(refs: list, job) -> list:
    """(height, width, raw RGB bytes, prepared) of the cached copy of each source in ``refs``."""
    sources, variant, max_pixels, transform = job
    rows = []
    for i in refs:
        img, prepared = variant.apply(decode(sources[i], max_pixels), transform)
        rows.append((img.height, img.width, img.tobytes(), prepared))  # raw: read back without decompressing
    return rows


FEATURES = {"key": "string", "height": "int32", "width": "int32", "pixels": "large_binary", "prepared": "bool",
            "checksum": "int64"}


class ImageCache:
    """One variant's entries: key -> decoded, resized RGB PIL image, read from memory-mapped Arrow tables
    (zero-copy up to the PIL image, its checksum checked on every read); an entry made by the processor's
    geometry comes back marked as such. The newest chunk holding a key serves it (a rebuilt entry's)."""

    def __init__(self, folder: Path, pixels: str = ""):
        import datasets

        self.folder, self.pixels = folder, pixels
        self._where: dict[str, tuple] = {}
        for chunk in sorted(folder.glob("chunk-*")) if folder.is_dir() else []:
            try:
                table = datasets.load_from_disk(str(chunk)).data.table
            except Exception as e:  # a chunk changed by hand or by a failing disk: say which, never guess
                raise DataError(f"image cache chunk '{chunk}' is unreadable ({type(e).__name__}); delete that folder "
                                "(its images are decoded again) or set data_cache false") from None
            keys, prepared = table.column("key").to_pylist(), table.column("prepared").to_pylist()
            sizes = zip(table.column("width").to_pylist(), table.column("height").to_pylist())
            sums = table.column("checksum").to_pylist()
            rows = [(part, i) for part in table.column("pixels").chunks for i in range(len(part))]
            for key, size, done, total, (part, i) in zip(keys, sizes, prepared, sums, rows):
                self._where[key] = (part, i, size, done, total, chunk)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def intact(self, key: str) -> bool:
        """Whether the entry's content matches its checksum."""
        part, i, size, prepared, total, _ = self._where[key]
        pixels = part[i].as_buffer()
        return len(pixels) == 3 * size[0] * size[1] and checksum(key, *size, prepared, pixels) == total

    def drop(self, key: str) -> None:
        del self._where[key]

    def image(self, key: str) -> Image.Image:
        part, i, size, prepared, total, chunk = self._where[key]
        pixels = part[i].as_buffer()
        if len(pixels) != 3 * size[0] * size[1] or checksum(key, *size, prepared, pixels) != total:
            # Damaged after this run's build checked it (a build decodes a damaged entry again): refuse, never serve.
            raise DataError(f"image cache chunk '{chunk}': the entry of '{key}' does not match its checksum (damaged "
                            "on disk while this run read it); run again (a damaged entry is decoded again), or set "
                            "data_cache false")
        img = Image.frombuffer("RGB", size, pixels, "raw", "RGB", 0, 1)
        return mark_prepared(img, self.pixels) if prepared else img


def build(keys: list[str], sources: list, variant: Variant, root: Path, max_pixels: Optional[int] = None,
          num_proc: Optional[int] = None, processor=None) -> tuple[ImageCache, int]:
    """(the variant's cache holding every key, how many entries this call decoded). Only missing keys are
    decoded: with ``num_proc`` processes (default: the CPU count, one process for a few hundred images).
    ``processor``: the eval variant's (its geometry makes the copies)."""
    folder = Path(root) / variant.folder
    cache = ImageCache(folder, variant.pixels)
    todo: dict[str, int] = {}
    damaged = 0
    for i, key in enumerate(keys):
        if key in cache and key not in todo and not cache.intact(key):
            cache.drop(key)  # decoded again below, into a newer chunk that serves it from then on
            damaged += 1
        if key not in cache and key not in todo:
            todo[key] = i
    if damaged:
        logger.warning(f"image cache {folder}: {damaged} damaged entr{'y' if damaged == 1 else 'ies'} (content not "
                       "matching its checksum) decoded again")
    if not todo:
        return cache, 0
    transform = eval_transform(processor) if processor is not None and variant.kind == "eval" else None
    if (transform.pixels_key if transform else "") != variant.pixels:
        raise ValueError("image cache: the variant was made for another processor")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / temporary_name(".probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise write_error(e, "image cache", root, SETTING, "data_cache false") from None
    remove_abandoned(folder)
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, 8) if len(todo) >= 512 else 1
    items = list(todo.items())
    with workers.spread(_encode, (sources, variant, max_pixels, transform), num_proc) as encode, \
            _quiet_datasets():
        for start in range(0, len(items), CHUNK):
            part = items[start:start + CHUNK]
            _write_chunk(folder, [k for k, _ in part], encode([i for _, i in part]))
    return ImageCache(folder, variant.pixels), len(todo)


def _write_chunk(folder: Path, keys: list[str], rows: list) -> None:
    """One chunk, saved to a temporary folder and renamed: complete, or absent (a failed write's files are
    removed at once: on a full disk they hold the space the rest of the machine needs)."""
    import datasets

    columns = {"key": keys, **{name: [r[j] for r in rows] for j, name in enumerate(list(FEATURES)[1:5])},
               "checksum": [checksum(k, w, h, prepared, pixels) for k, (h, w, pixels, prepared) in zip(keys, rows)]}
    features = datasets.Features({name: datasets.Value(kind) for name, kind in FEATURES.items()})
    tmp = folder / temporary_name()
    try:
        datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, "image cache", folder.parent, SETTING, "data_cache false") from None
    os.replace(tmp, folder / f"chunk-{time.time_ns()}-{uuid.uuid4().hex[:8]}")


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
