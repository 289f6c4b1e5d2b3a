"""The data check: every image decoded once (bad files listed with the reason), a pixel hash for exact
duplicates and a perceptual hash for near duplicates, grouped so that no group straddles two splits."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
from PIL import Image

from hf_medtl.data.decode import DecodeError, decode

_N = 32
_DCT = np.sqrt(2 / _N) * np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


@dataclass
class ImageInfo:
    reason: Optional[str] = None  # why the file is unusable; None when it decoded
    sha: Optional[str] = None  # of the decoded RGB pixels: re-encodings of identical pixels match
    phash: Optional[int] = None  # 64-bit DCT perceptual hash: resizes and mild re-compressions stay close
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def perceptual_hash(img: Image.Image) -> int:
    gray = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ gray @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def inspect(source) -> ImageInfo:
    try:
        img = decode(source)
    except DecodeError as e:
        return ImageInfo(reason=str(e))
    arr = np.asarray(img)
    sha = hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest()
    return ImageInfo(sha=sha, phash=perceptual_hash(img), width=img.width, height=img.height)


def inspect_all(sources: list, workers: int | None = None) -> list[ImageInfo]:
    """inspect() over every source. Threads, not processes: Pillow's decoders and hashlib release the GIL,
    and a thread pool is safe inside an already distributed (gloo/NCCL) process."""
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers == 1 or len(sources) < 64:
        return [inspect(s) for s in sources]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(inspect, sources, chunksize=32))


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


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
    return {"exact": _multi(exact.groups()), "near": _multi(near.groups())}


def _multi(groups: list[int]) -> list[list[int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return [m for m in members.values() if len(m) > 1]
