"""The data check: every image decoded once (bad files listed with the reason), a pixel hash for exact
duplicates, and for near duplicates a perceptual hash and a 32x32 grey thumbnail (hf_medtl.data.near: every
candidate pair is confirmed on the thumbnails' pixels), grouped so that no group straddles two splits."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from hf_medtl.data import near
from hf_medtl.data.decode import DecodeError, decode
from hf_medtl.data.groups import UnionFind, multi

_N = near.THUMB
_DCT = np.sqrt(2 / _N) * np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


@dataclass
class ImageInfo:
    reason: Optional[str] = None  # why the file is unusable; None when it decoded
    sha: Optional[str] = None  # of the decoded RGB pixels: re-encodings of identical pixels match
    phash: Optional[int] = None  # 64-bit DCT perceptual hash: resizes and mild re-compressions stay close
    size: Optional[tuple[int, int]] = None  # decoded width, height
    thumb: Optional[np.ndarray] = None  # 32x32 uint8 grey (the hash's input, 1 KB): the pixel check needs no 2nd decode

    @property
    def ok(self) -> bool:
        return self.reason is None


def thumbnail(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.uint8)


def perceptual_hash(img: Image.Image, thumb: Optional[np.ndarray] = None) -> int:
    gray = (thumbnail(img) if thumb is None else thumb).astype(np.float64)
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
    thumb = thumbnail(img)
    return ImageInfo(sha=sha, phash=perceptual_hash(img, thumb), size=img.size, thumb=thumb)


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


def duplicate_groups(infos: list[ImageInfo], near_distance: Optional[int], uf: Optional[UnionFind] = None,
                     pixel_distance: Optional[float] = None, small_image_size: int = near.SMALL_IMAGE_SIZE) -> dict:
    """Union exact duplicates (same pixel hash) and confirmed near duplicates into ``uf``. Near candidates
    (perceptual hash within near_distance bits, or coarse nearest neighbours) are grouped only when their
    pixel distance (hf_medtl.data.near) is within the threshold of their resolution rule; ``near_distance``
    None: exact copies only. Returns the groups, each near group with its largest confirming distance and the
    threshold that applied to it, the confirmed pairs with their distances, and the rule."""
    uf = uf or UnionFind(len(infos))
    first_of = {}
    exact = UnionFind(len(infos))
    for i, info in enumerate(infos):
        if info.sha is not None:
            j = first_of.setdefault(info.sha, i)
            if j != i:
                uf.union(i, j)
                exact.union(i, j)
    out = {"exact": multi(exact.groups()), "near": [], "pairs": {}, "rule": None, "candidates": 0, "rejected": 0}
    reps = [i for i in first_of.values() if infos[i].thumb is not None]  # one image per exact group
    if near_distance is None or len(reps) < 2:
        return out
    prepared = near.prepare(np.stack([infos[i].thumb for i in reps]))
    cand = set(near_pairs([infos[i].phash for i in reps], near_distance)) | set(near.neighbour_pairs(prepared))
    cand = np.array(sorted(cand), dtype=np.int64).reshape(-1, 2)
    dist = near.pixel_distances(prepared, cand)
    per_image, out["rule"] = near.thresholds([info.size for info in infos], pixel_distance, small_image_size)
    limit = per_image[reps]
    ok = dist <= np.minimum(limit[cand[:, 0]], limit[cand[:, 1]])
    out.update(candidates=len(cand), rejected=int((~ok).sum()))
    linked = UnionFind(len(infos))
    for (a, b), d in zip(cand[ok], dist[ok]):
        i, j = reps[a], reps[b]
        out["pairs"][(i, j)] = round(float(d), 4)
        uf.union(i, j)
        linked.union(i, j)
    for i, info in enumerate(infos):  # exact copies join their representative's near group
        if info.sha is not None and first_of[info.sha] != i:
            linked.union(i, first_of[info.sha])
    roots = linked.groups()
    worst: dict = {}
    for (i, j), d in out["pairs"].items():
        worst[roots[i]] = max(worst.get(roots[i], 0.0), d)
    out["near"] = [(m, worst[roots[m[0]]], float(per_image[m].min())) for m in multi(roots) if roots[m[0]] in worst]
    return out
