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
from hf_medtl.data.groups import UnionFind, complete_linkage, multi

_N = near.THUMB
_DCT = np.sqrt(2 / _N) * np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


@dataclass
class ImageInfo:
    reason: Optional[str] = None  # why the file is unusable; None when it decoded
    sha: Optional[str] = None  # of the decoded RGB pixels: re-encodings of identical pixels match
    phash: Optional[int] = None  # 64-bit DCT perceptual hash: resizes and mild re-compressions stay close
    size: Optional[tuple[int, int]] = None  # decoded width, height
    thumb: Optional[np.ndarray] = None  # 32x32 uint8 grey (the hash's input, 1 KB): the pixel check needs no 2nd decode
    fine: Optional[np.ndarray] = None  # 64x64 uint8 grey (4 KB) of an image larger than 32 px: the 64-px pixel check

    @property
    def ok(self) -> bool:
        return self.reason is None


def thumbnail(img: Image.Image, side: int = _N) -> np.ndarray:
    return np.asarray(img.convert("L").resize((side, side), Image.Resampling.LANCZOS), dtype=np.uint8)


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
    fine = thumbnail(img, near.FINE) if min(img.size) > _N else None
    return ImageInfo(sha=sha, phash=perceptual_hash(img, thumb), size=img.size, thumb=thumb, fine=fine)


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


def unreadable(count: int, path, reason: str) -> str:
    """The start of the one line about unreadable images (the data stage's, evaluate's): how many, the first
    with its reason."""
    return f"{count} unreadable image(s), e.g. '{path}' ({reason})"


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
    (perceptual hash within near_distance bits, or coarse nearest neighbours) are confirmed on the pixels
    (hf_medtl.data.near.Confirmer) and grouped by complete linkage: every two images of a near group are
    confirmed copies of each other, so look-alikes cannot chain into one large group. ``near_distance`` None:
    exact copies only. Returns the groups, each near group with its largest 32-px distance and the threshold that
    applied to it, every confirmed pair inside a group with its distance, the rule, and counts."""
    uf = uf or UnionFind(len(infos))
    first_of = {}
    exact = UnionFind(len(infos))
    for i, info in enumerate(infos):
        if info.sha is not None:
            j = first_of.setdefault(info.sha, i)
            if j != i:
                uf.union(i, j)
                exact.union(i, j)
    out = {"exact": multi(exact.groups()), "near": [], "pairs": {}, "rule": None, "candidates": 0, "rejected": 0,
           "left_apart": 0}
    reps = [i for i in first_of.values() if infos[i].thumb is not None]  # one image per exact group
    if near_distance is None or len(reps) < 2:
        return out
    sizes = [infos[i].size for i in reps]
    per_image, out["rule"] = near.thresholds([info.size for info in infos], pixel_distance, small_image_size)
    small = near.is_small(sizes, small_image_size)
    confirm = near.Confirmer(np.stack([infos[i].thumb for i in reps]), [infos[i].fine for i in reps],
                             per_image[reps], small, pixel_distance)
    cand = np.array(sorted(near.candidates(confirm.prepared, [infos[i].phash for i in reps], near_distance, small,
                                           near_pairs)), dtype=np.int64).reshape(-1, 2)
    ok = confirm.check(cand)
    out.update(candidates=len(cand), rejected=int((~ok).sum()))
    edges = sorted(map(tuple, cand[ok].tolist()), key=lambda p: (confirm.distance(*p), p))  # closest first
    linked, out["left_apart"] = complete_linkage(len(reps), edges, confirm.all_confirmed)
    group_of = {}
    for m in linked:
        for a, b in ((a, b) for x, a in enumerate(m) for b in m[x + 1:]):
            out["pairs"][(reps[a], reps[b])] = confirm.distance(a, b)
        for a in m:
            uf.union(reps[a], reps[m[0]])
            group_of[reps[a]] = len(out["near"])
        widest = max(confirm.distance(a, b) for x, a in enumerate(m) for b in m[x + 1:])
        out["near"].append(([reps[a] for a in m], widest, float(per_image[[reps[a] for a in m]].min())))
    for i, info in enumerate(infos):  # exact copies join their representative's near group
        if info.sha is not None and first_of[info.sha] != i and first_of[info.sha] in group_of:
            out["near"][group_of[first_of[info.sha]]][0].append(i)
    out["near"] = [(sorted(m), d, t) for m, d, t in out["near"]]
    return out
