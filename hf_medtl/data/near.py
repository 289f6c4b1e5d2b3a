"""Near duplicates, found in two stages on the 32x32 grey thumbnails the data check keeps from its one decode.

1. Candidates: pairs whose 64-bit perceptual hashes lie within ``near_duplicate_distance`` bits, plus each
   image's nearest neighbours under a coarse, shift-tolerant comparison (a hash misses a copy shifted by two
   pixels: at 28 px that moves the whole picture by 7%).
2. Confirmation on the pixels: both thumbnails blurred (Gaussian, sigma 1 px), each standardised to zero mean
   and unit standard deviation (so a brightness or contrast change costs nothing), and compared as the mean
   absolute difference of their central 24x24 pixels, the smallest over shifts of up to ``MAX_SHIFT``
   thumbnail pixels (whole, then half and quarter pixels, bilinear). The distance is in standard deviations:
   0 for identical pictures; at most 0.06 for the planted JPEG re-encodings, resizes, brightness changes and
   2-px shifts of real 28-px images (0.105 at 64-224 px); 0.10 and more for distinct but similar-looking 28-px
   chest X-rays. A candidate is grouped only when its distance is within the threshold of its resolution rule.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
from scipy.ndimage import gaussian_filter

THUMB = 32  # thumbnail side (px): the perceptual hash's input, kept for the pixel check
BLUR = 1.0  # Gaussian sigma (thumbnail px): sub-pixel misalignment and JPEG noise cost little
MAX_SHIFT = 3  # thumbnail px: a 2-px shift of a 28-px image is 2.3 thumbnail px
STD_FLOOR = 4.0  # grey levels: a near-flat picture is not blown up into noise by standardising
NEIGHBOURS = 8  # coarse nearest neighbours of each image that become candidates
SUBPIXEL_STEPS = (0.5, 0.25)  # after the best whole shift: a 2-px shift of a 224-px image is 0.29 thumbnail px
_COARSE_SHIFTS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]

# Pixel distance (standard deviations) that confirms a candidate, by resolution. Calibrated on the shared
# datasets (`python benchmarks/leakage.py guard`; docs/data.md): planted copies of real images
# stay below them; distinct MedMNIST images lie above the small-image one.
SMALL_IMAGE_SIZE = 64  # px, shorter side: below it, 64 hash bits say little and the strict rule applies
PIXEL_DISTANCE = {"small": 0.08, "large": 0.12}


def prepare(thumbs: np.ndarray) -> np.ndarray:
    """(N, 32, 32) uint8 thumbnails -> blurred float32, ready for pixel_distances and neighbour_pairs."""
    return gaussian_filter(np.asarray(thumbs, np.float32), (0, BLUR, BLUR), mode="nearest")


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    return x / np.maximum(x.std(-1, keepdims=True), STD_FLOOR)


def pixel_distances(prepared: np.ndarray, pairs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The confirming distance (standard deviations, see the module doc) of each (i, j) row of ``pairs``: the
    central 24x24 of i against j's, shifted by whole pixels up to MAX_SHIFT, then by half and quarter pixels
    around the best whole shift (a 2-px shift of a 224-px image is 0.29 thumbnail pixels)."""
    out = np.empty(len(pairs), np.float32)
    n = prepared.shape[1]
    m = MAX_SHIFT + 1
    w, offs = n - 2 * m, range(-m, m + 1)
    k = len(offs)
    inner = np.array([(dy + m) * k + dx + m for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)
                      for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)])
    for start in range(0, len(pairs), chunk):
        p = pairs[start:start + chunk]
        a = _standardise(prepared[p[:, 0], m:n - m, m:n - m].reshape(len(p), -1))[:, None]
        b = prepared[p[:, 1]]
        crops = np.stack([b[:, m + dy:m + dy + w, m + dx:m + dx + w].reshape(len(p), -1)
                          for dy in offs for dx in offs], 1)  # (pairs, k * k shifts, w * w)
        dist = np.abs(a - _standardise(crops[:, inner])).mean(2)
        best = dist.min(1)
        pos = np.stack(np.divmod(inner[dist.argmin(1)], k), 1).astype(np.float32)  # best whole shift (crop index)
        for step in SUBPIXEL_STEPS:  # then look around it by half and by quarter pixels
            centre = pos.copy()
            for sy in (-step, 0, step):
                for sx in (-step, 0, step):
                    if sy or sx:
                        at = np.clip(centre + np.array([sy, sx], np.float32), 0, k - 1)
                        d = np.abs(a[:, 0] - _standardise(_bilinear(crops, at, k))).mean(1)
                        better = d < best
                        best, pos[better] = np.where(better, d, best), at[better]
        out[start:start + chunk] = best
    return out


def _bilinear(crops: np.ndarray, at: np.ndarray, k: int) -> np.ndarray:
    """Each pair's crop at a fractional shift ``at`` (row, column in crop-index units): the bilinear mix of
    the four whole-pixel crops around it."""
    lo = np.minimum(np.floor(at).astype(int), k - 2)
    wy, wx = (at - lo).T[:, :, None]
    rows = np.arange(len(at))
    c = lambda dy, dx: crops[rows, (lo[:, 0] + dy) * k + lo[:, 1] + dx]  # noqa: E731
    return (1 - wy) * ((1 - wx) * c(0, 0) + wx * c(0, 1)) + wy * ((1 - wx) * c(1, 0) + wx * c(1, 1))


def _coarse(prepared: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """8x8 block means of the central 24x24 (shifted by dy, dx), as unit vectors of zero mean."""
    crop = prepared[:, 4 + dy:28 + dy, 4 + dx:28 + dx]
    v = crop.reshape(len(crop), 8, 3, 8, 3).mean((2, 4)).reshape(len(crop), -1)
    v = v - v.mean(1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)


def neighbour_pairs(prepared: np.ndarray, k: int = NEIGHBOURS, chunk: int = 128) -> Iterable[tuple[int, int]]:
    """(i, j), i < j, with j among the k nearest of i (or i of j) by coarse correlation, the best over shifts
    of up to 2 thumbnail px. Quadratic in the number of images, like the hash comparison (seconds for 5,000)."""
    n = len(prepared)
    if n < 2:
        return
    k = min(k, n - 1)
    base = _coarse(prepared, 0, 0)
    shifted = np.concatenate([_coarse(prepared, dy, dx) for dy, dx in _COARSE_SHIFTS]).T  # (64, shifts * n)
    for start in range(0, n, chunk):
        sim = (base[start:start + chunk] @ shifted).reshape(-1, len(_COARSE_SHIFTS), n).max(1)
        rows = np.arange(len(sim))
        sim[rows, start + rows] = -np.inf  # not itself
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r, js in enumerate(top):
            for j in js:
                yield (start + r, int(j)) if start + r < j else (int(j), start + r)


def thresholds(sizes: list[Optional[tuple[int, int]]], pixel_distance: Optional[float],
               small_image_size: int) -> tuple[np.ndarray, dict]:
    """Per image: its threshold (a pair takes the smaller of its two), and the rule report."""
    small = np.array([s is not None and min(s) < small_image_size for s in sizes])
    if pixel_distance is not None:
        per_image = np.full(len(sizes), float(pixel_distance))
        rule = {"pixel_distance": pixel_distance, "applied": "near_duplicate_pixel_distance (set in the recipe)"}
    else:
        per_image = np.where(small, PIXEL_DISTANCE["small"], PIXEL_DISTANCE["large"])
        rule = {"pixel_distance": {f"below {small_image_size} px": PIXEL_DISTANCE["small"],
                                   f"{small_image_size} px and above": PIXEL_DISTANCE["large"]},
                "applied": "resolution-aware default"}
    rule.update(small_image_size=small_image_size, images_below_small_image_size=int(small.sum()))
    return per_image, rule
