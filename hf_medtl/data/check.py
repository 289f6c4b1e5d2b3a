"""The data check: every image decoded once (bad files listed with the reason), a pixel hash for exact
duplicates and a perceptual hash for near duplicates, grouped so that no group straddles two splits."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from hf_medtl.data.decode import DecodeError, decode
from hf_medtl.data.groups import UnionFind, multi

_N = 32
_DCT = np.sqrt(2 / _N) * np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


@dataclass
class ImageInfo:
    reason: Optional[str] = None  # why the file is unusable; None when it decoded
    sha: Optional[str] = None  # of the decoded RGB pixels: re-encodings of identical pixels match
    phash: Optional[int] = None  # 64-bit DCT perceptual hash: resizes and mild re-compressions stay close

    @property
    def ok(self) -> bool:
        return self.reason is None


def perceptual_hash(img: Image.Image) -> int:
    gray = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ gray @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def inspect(source, max_pixels: Optional[int] = None) -> ImageInfo:
    try:
        img = decode(source, max_pixels)
    except DecodeError as e:
        return ImageInfo(reason=str(e))
    arr = np.asarray(img)
    sha = hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest()
    return ImageInfo(sha=sha, phash=perceptual_hash(img))


def inspect_all(sources: list, max_pixels: Optional[int] = None) -> list[ImageInfo]:
    """inspect() over every source. Threads, not processes: Pillow's decoders and hashlib release the GIL,
    and a thread pool is safe inside an already distributed (gloo/NCCL) process. ``pool.map`` hands out
    work as threads free up and each thread holds one decoded image at a time, so peak memory stays near
    ``workers`` images (each at most ``max_pixels``) whatever the dataset size."""
    workers = min(os.cpu_count() or 1, 8)
    if workers == 1 or len(sources) < 64:
        return [inspect(s, max_pixels) for s in sources]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: inspect(s, max_pixels), sources))


def near_pairs(hashes: list[Optional[int]], max_distance: int, chunk: int = 1024):
    """(i, j) with i < j whose perceptual hashes differ in at most max_distance bits."""
    idx = np.array([i for i, h in enumerate(hashes) if h is not None])
    if len(idx) < 2:
        return
    h = np.array([hashes[i] for i in idx], dtype=np.uint64)
    for start in range(0, len(h), chunk):
        block = np.bitwise_count(h[start:start + chunk, None] ^ h[None, :])
        for a, b in zip(*np.nonzero(block <= max_distance)):
            if start + a < b:
                yield int(idx[start + a]), int(idx[b])


def duplicate_groups(infos: list[ImageInfo], near_distance: Optional[int], uf: Optional[UnionFind] = None) -> dict:
    """Union exact (same pixel hash) and near (perceptual hash within near_distance) duplicates into ``uf``."""
    uf = uf or UnionFind(len(infos))
    first_of = {}
    exact = UnionFind(len(infos))
    for i, info in enumerate(infos):
        if info.sha is not None:
            j = first_of.setdefault(info.sha, i)
            if j != i:
                uf.union(i, j)
                exact.union(i, j)
    near = UnionFind(len(infos))
    if near_distance is not None:
        for i, j in near_pairs([info.phash for info in infos], near_distance):
            uf.union(i, j)
            near.union(i, j)
    return {"exact": multi(exact.groups()), "near": multi(near.groups())}
