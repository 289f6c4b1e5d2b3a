"""An image-cache variant's folder (hf_medtl.data.cache): its chunks, each a ``datasets`` Arrow table written whole
or not at all; the entries' content checksums; reading them back (a chunk that cannot be opened listed, never
guessed at; an entry whose content does not match its checksum never served)."""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import xxhash  # (a dependency of datasets)
from PIL import Image

from hf_medtl.data.cache_files import temporary_name, write_error
from hf_medtl.data.transforms import mark_prepared
from hf_medtl.data.types import DataError

FEATURES = {"key": "string", "height": "int32", "width": "int32", "pixels": "large_binary", "prepared": "bool",
            "checksum": "int64"}
SETTING = "data_cache_dir (or $HF_MEDTL_IMAGE_CACHE)"
OFF = "turn the cache off (data_cache: false, --no_data_cache)"
logger = logging.getLogger("hf_medtl")


def checksum(key: str, width: int, height: int, prepared: bool, pixels) -> int:
    """An entry's content checksum: xxh3 (several GB/s: a small share of a read) of everything the entry serves,
    so that a flipped byte in the pixels, a changed size or an entry under another key is seen."""
    h = xxhash.xxh3_64(f"{key}|{width}x{height}|{int(prepared)}|".encode())
    h.update(pixels)
    return h.intdigest() & (2 ** 63 - 1)  # 63 bits: an int64 column (datasets passes ints through int64)


def open_chunk(chunk: Path):
    """A chunk's Arrow table, its structure checked in full (offsets in bounds, keys valid text: cheap, and a
    damaged offset would otherwise make a read reach outside the file); raises when it is not a whole chunk."""
    import datasets

    table = datasets.load_from_disk(str(chunk)).data.table
    if table.column_names != list(FEATURES):
        raise ValueError(f"columns {table.column_names}")
    table.validate(full=True)
    return table


class ImageCache:
    """One variant's entries: key -> decoded, resized RGB PIL image, read from memory-mapped Arrow tables
    (zero-copy up to the PIL image, its checksum checked on every read); an entry made by the processor's
    geometry comes back marked as such. The newest chunk holding a key serves it (a rebuilt entry's). A chunk
    that cannot be opened is listed in ``unreadable`` (its entries absent). ``redo(key)``: the entry's copy made
    again from its source ((image, prepared)), or None where the source is unknown: what serves an entry damaged
    after it was checked."""

    def __init__(self, folder: Path, pixels: str = "", redo: Optional[Callable] = None):
        self.folder, self.pixels, self.redo = folder, pixels, redo
        self._where: dict[str, tuple] = {}
        self._warned: set = set()
        self.unreadable: list[tuple[Path, str]] = []
        for chunk in sorted(folder.glob("chunk-*")) if folder.is_dir() else []:
            try:
                table = open_chunk(chunk)
            except Exception as e:  # noqa: BLE001 (OS, Arrow, json and datasets errors alike: not usable)
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}" if str(e) else type(e).__name__
                self.unreadable.append((chunk, reason))
                continue
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
            # Damaged after this run's build checked it (a build decodes a damaged entry again): never served.
            img, prepared = self._decode_again(key, chunk)
        else:
            img = Image.frombuffer("RGB", size, pixels, "raw", "RGB", 0, 1)
        return mark_prepared(img, self.pixels) if prepared else img

    def _decode_again(self, key: str, chunk: Path) -> tuple[Image.Image, bool]:
        """A damaged entry's copy made again from its source (what the build stored), with one log line."""
        try:
            copy = self.redo(key) if self.redo is not None else None
        except DataError as e:  # its source is gone or changed too: nothing true left to serve
            raise DataError(f"image cache chunk '{chunk}': the entry of '{key}' does not match its checksum (damaged "
                            f"on disk) and cannot be made again: {e}") from None
        if copy is None:
            raise DataError(f"image cache chunk '{chunk}': the entry of '{key}' does not match its checksum (damaged "
                            f"on disk) and its source is unknown here; run again (a damaged entry is decoded again), "
                            f"or {OFF}")
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(f"image cache chunk '{chunk}': the entry of '{key}' was damaged on disk during the run; "
                           "decoded again from its source (the next run stores it again)")
        return copy


def write_chunk(folder: Path, keys: list[str], rows: list) -> None:
    """One chunk of ``rows`` ((height, width, RGB bytes, prepared) per key), saved to a temporary folder and
    renamed: complete, or absent (a failed write's files are removed at once: on a full disk they hold the space
    the rest of the machine needs)."""
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


class quiet_datasets:
    """datasets' progress bars off while building (the run prints one line instead)."""

    def __enter__(self):
        import datasets

        self.was = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import datasets

        if self.was:
            datasets.utils.logging.enable_progress_bar()
