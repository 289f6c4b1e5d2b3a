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
(the new chunk's copy is the one read from then on), and every read checks the entry it serves and decodes a
damaged one again from its source, so flipped bytes are never served as pixels. A chunk that cannot be opened
(truncated, its structure damaged) is set aside and its images decoded again. Decoding runs in worker processes
(``$HF_MEDTL_CACHE_WORKERS`` of them, else chosen by the image count) that die with the build
(hf_medtl.data.workers); a worker that dies (an OOM kill) stops the command in one line, the chunks already
written kept. Location: ``data_cache_dir``, else ``$HF_MEDTL_IMAGE_CACHE``, else
``<HF_DATASETS_CACHE>/hf_medtl_images``. Stale entries are never served; delete the folder to reclaim space.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import math
import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from hf_medtl.data import workers
from hf_medtl.data.cache_chunks import OFF, SETTING, ImageCache, quiet_datasets, write_chunk
from hf_medtl.data.cache_files import remove_abandoned, set_aside, temporary_name, write_error
from hf_medtl.data.decode import DecodeError, decode
from hf_medtl.data.transforms import eval_transform
from hf_medtl.data.types import DataError

VERSION = 4  # of the stored layout: a change gives every entry a new variant folder (4: entry checksums)
CHUNK = 1024  # entries per chunk: what a killed build loses at most
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
# RandomResizedCrop's smallest crop side, as a fraction of the image side: area crop_scale_min at aspect 3/4.
_MIN_RATIO = 3 / 4
DECODERS = ("pillow", "numpy", "pydicom", "pylibjpeg", "python-gdcm")  # what decode.py reads files with
WORKERS = "HF_MEDTL_CACHE_WORKERS"  # decoding processes of a build (1: in the command's own process)
logger = logging.getLogger("hf_medtl")


def default_dir(given: str | Path | None = None) -> Path:
    """The image cache's folder: ``given`` (a recipe's data_cache_dir) when set, else $HF_MEDTL_IMAGE_CACHE, else
    <HF_DATASETS_CACHE>/hf_medtl_images."""
    if given:
        return Path(given)
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


def _encode(refs: list, job) -> list:
    """(height, width, raw RGB bytes, prepared) of the cached copy of each source in ``refs``."""
    sources, variant, max_pixels, transform = job
    rows = []
    for i in refs:
        img, prepared = _copy(sources[i], variant, max_pixels, transform)
        rows.append((img.height, img.width, img.tobytes(), prepared))  # raw: read back without decompressing
    return rows


def _copy(source, variant: Variant, max_pixels, transform) -> tuple[Image.Image, bool]:
    """The cached copy of ``source`` (decoded, then the variant's geometry), or one line naming the file."""
    try:
        return variant.apply(decode(source, max_pixels), transform)
    except DecodeError as e:  # the file changed or went away since the data check read it
        what = f"'{source}'" if not isinstance(source, np.ndarray) else "an in-memory image"
        raise DataError(f"image cache: {what} cannot be decoded ({e}) for its cached copy; restore it, or {OFF}") \
            from None


def _redo(sources: dict, variant: Variant, max_pixels, transform, key: str):
    """(image, prepared): an entry's copy made again from its source, as the build made it; None if unknown."""
    return _copy(sources[key], variant, max_pixels, transform) if key in sources else None


def build(keys: list[str], sources: list, variant: Variant, root: Path, max_pixels: Optional[int] = None,
          num_proc: Optional[int] = None, processor=None) -> tuple[ImageCache, int]:
    """(the variant's cache holding every key, how many entries this call decoded). Only missing keys are
    decoded (and damaged ones, and those of a chunk that cannot be opened, set aside first): with ``num_proc``
    processes (default: $HF_MEDTL_CACHE_WORKERS, else the CPU count, one process for a few hundred images).
    ``processor``: the eval variant's (its geometry makes the copies). The cache returned decodes an entry
    damaged during the run again from its source."""
    folder = Path(root) / variant.folder
    transform = eval_transform(processor) if processor is not None and variant.kind == "eval" else None
    if (transform.pixels_key if transform else "") != variant.pixels:
        raise ValueError("image cache: the variant was made for another processor")
    redo = functools.partial(_redo, dict(zip(keys, sources)), variant, max_pixels, transform)
    cache = ImageCache(folder, variant.pixels, redo)
    for chunk, reason in cache.unreadable:  # out of the chunks' names first: a rebuilt copy is the only one seen
        _set_aside(chunk, reason)
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / temporary_name(".probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise write_error(e, "image cache", root, SETTING, "data_cache false") from None
    remove_abandoned(folder)
    num_proc = num_proc or workers_wanted(len(todo))
    _decode_into(folder, list(todo.items()), (sources, variant, max_pixels, transform), num_proc)
    return ImageCache(folder, variant.pixels, redo), len(todo)


def workers_wanted(images: int) -> int:
    """Decoding processes: $HF_MEDTL_CACHE_WORKERS, else the CPU count (at most 8) from 512 images to decode
    (below that, starting processes costs more than it saves), else 1."""
    value = os.environ.get(WORKERS, "").strip()
    if not value:
        return min(os.cpu_count() or 1, 8) if images >= 512 else 1
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"${WORKERS} is '{value}'; set it to a whole number of decoding processes, at least 1 "
                        "(1: in the command's own process), or unset it")
    return int(value)


def _decode_into(folder: Path, items: list, job, num_proc: int) -> None:
    """Decode ``items`` ((key, index into the sources)) in chunks of CHUNK, each written whole before the next. A
    worker that dies (SIGKILL: the kernel's OOM killer) ends the build in one line; the chunks written stay."""
    done = 0
    try:
        with workers.spread(_encode, job, num_proc) as encode, quiet_datasets():
            for start in range(0, len(items), CHUNK):
                part = items[start:start + CHUNK]
                rows = encode([i for _, i in part])
                write_chunk(folder, [k for k, _ in part], rows)
                done += len(part)
    except (BrokenProcessPool, MemoryError) as e:
        died = "a decoding worker process died (killed: out of memory?)" if isinstance(e, BrokenProcessPool) \
            else "decoding ran out of memory"
        fewer = f"set ${WORKERS} to fewer processes than {num_proc} (1 decodes in the command's own process), " \
            if num_proc > 1 else ""
        raise DataError(f"image cache '{folder}': {died} after {done:,} of {len(items):,} images were stored (kept: a "
                        f"next run decodes only the rest); {fewer}lower max_image_pixels, or {OFF}") from None


def _set_aside(chunk: Path, reason: str) -> None:
    """Move a chunk that cannot be opened out of the cache (its images are decoded again), with one log line; one
    line naming it when the folder cannot be changed."""
    try:
        set_aside(chunk)
    except OSError as e:
        raise DataError(f"image cache chunk '{chunk}' cannot be opened ({reason}) and cannot be set aside to be "
                        f"rebuilt ({e.strerror or e}); delete that folder, set {SETTING} to a writable folder, or "
                        f"{OFF}") from None
    logger.warning(f"image cache chunk '{chunk}' could not be opened ({reason}): set aside, its images are decoded "
                   "again")
