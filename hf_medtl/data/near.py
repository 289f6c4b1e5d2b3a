"""Near duplicates, found in three stages on the grey thumbnails the data check keeps from its one decode
(32x32, and 64x64 for an image larger than 32 px), and grouped so that no group is wider than the thresholds.

1. Candidates (``candidates``): pairs whose 64-bit perceptual hashes lie within ``near_duplicate_distance``
   bits, plus each image's nearest neighbours: for small images by a coarse, shift-tolerant comparison (a hash
   misses a copy shifted by two pixels: at 28 px that moves the whole picture by 7%), for larger ones by the
   amplitude spectrum (unchanged when a picture moves by a fraction of a pixel) and the coarse comparison. A
   neighbour pair must also correlate at least ``COARSE_MIN`` (planted copies: >= 0.99 at 28 px, >= 0.97 at
   64-224 px, at half-pixel steps), so that a homogeneous dataset does not hand the pixel check tens of
   thousands of look-alikes to reject (PneumoniaMNIST: 34,674 candidates before, 405 now).
2. Confirmation on the pixels: both thumbnails blurred (Gaussian, sigma 1 px), each standardised to zero mean
   and unit standard deviation (so a brightness or contrast change costs nothing), and compared as the mean
   absolute difference of their central 24x24 pixels, the smallest over shifts of up to ``MAX_SHIFT``
   thumbnail pixels (whole, then half and quarter pixels, bilinear). The distance is in standard deviations:
   0 for identical pictures; at most 0.06 for the planted JPEG re-encodings, resizes, brightness changes and
   2-px shifts of real 28-px images (0.105 at 64-224 px); 0.10 and more for distinct but similar-looking 28-px
   chest X-rays. A candidate passes only when its distance is within the threshold of its resolution rule.
3. For images of ``small_image_size`` and above, the same comparison once more on the 64x64 thumbnails (blurred
   by 1.5 px, around the alignment stage 2 found): at 32 px, distinct scans of one modality (the organ of one
   scanner, its noise and texture blurred away) lie as close as copies do (0.04-0.12); at 64 px the copies
   stay within 0.048 and the look-alikes move apart (issue 31; docs/benchmarks.md "The leakage guard itself").

Grouping (hf_medtl.data.groups.complete_linkage, with ``Confirmer.all_confirmed``): two groups merge only when
every pair across them lies within LINK_SLACK x the thresholds, so look-alikes cannot chain into one group.
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
FINE = 64  # px: the second thumbnail of an image at least small_image_size wide (4 KB)
FINE_BLUR = 1.5  # Gaussian sigma (64-px thumbnail px)
FINE_MAX_SHIFT = 6  # 64-px thumbnail px: the same reach as MAX_SHIFT at 32 px
FINE_REACH = 2  # 64-px thumbnail px searched around the alignment the 32-px comparison found (doubled)
# Grouping: a candidate pair joins two groups when it is within the thresholds and every other pair across them
# is within LINK_SLACK x the thresholds. No group is wider than that (no chaining); copies of one original may
# lie a little further from each other than from it (a 22-px resize of a 28-px scan: 0.068 from its original,
# 0.086 from the original's JPEG re-encoding).
LINK_SLACK = 1.25
FINE_DISTANCE = 0.055  # planted copies of 64-224 px images <= 0.048; distinct look-alike organ scans: 1% below 0.055
SPECTRUM_K = 5  # frequencies (cycles per thumbnail) of the candidate descriptor of large images
SPECTRUM_NEIGHBOURS = 6  # nearest neighbours by spectrum that become candidates
# ... and by coarse correlation, for large images: the spectrum of a copy moved by whole pixels with its border
# repeated (2 px of a 64-px image) can rank below a dozen look-alikes, its coarse correlation does not
LARGE_NEIGHBOURS = 3
# Coarse correlation a neighbour pair needs to become a candidate, by the pair's resolution rule: planted copies
# lie at >= 0.9901 (28-px X-rays) and >= 0.9643 (Brain MRI at 224 px).
COARSE_MIN = {"small": 0.985, "large": 0.955}


def prepare(thumbs: np.ndarray) -> np.ndarray:
    """(N, 32, 32) uint8 thumbnails -> blurred float32, ready for pixel_distances and neighbour_pairs."""
    return gaussian_filter(np.asarray(thumbs, np.float32), (0, BLUR, BLUR), mode="nearest")


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    return x / np.maximum(x.std(-1, keepdims=True), STD_FLOOR)


def prepare_fine(thumbs: np.ndarray) -> np.ndarray:
    """(N, 64, 64) uint8 fine thumbnails -> blurred float32 for pixel_distances(..., FINE_MAX_SHIFT)."""
    return gaussian_filter(np.asarray(thumbs, np.float32), (0, FINE_BLUR, FINE_BLUR), mode="nearest")


def pixel_distances(prepared: np.ndarray, pairs: np.ndarray, max_shift: int = MAX_SHIFT,
                    chunk: Optional[int] = None, centre: Optional[np.ndarray] = None,
                    reach: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The confirming distance (standard deviations, see the module doc) of each (i, j) row of ``pairs``, and
    the shift (dy, dx, thumbnail px) of j that gave it: the centre of i (all but max_shift + 1 px on each side:
    24x24 of a 32-px thumbnail) against j's, shifted by whole pixels up to ``reach`` around ``centre`` (default:
    up to max_shift around 0), then by half and quarter pixels around the best whole shift (a 2-px shift of a
    224-px image is 0.29 thumbnail pixels)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    dists, shifts = np.empty(len(pairs), np.float32), np.zeros((len(pairs), 2), np.float32)
    n = prepared.shape[1]
    m = max_shift + 1
    r = max_shift if reach is None else reach
    w, k = n - 2 * m, 2 * r + 3  # crops at the whole shifts centre +/- (r + 1): the subpixel steps need one more
    centre = (np.zeros((len(pairs), 2), np.int64) if centre is None
              else np.clip(np.asarray(centre, np.int64), r + 1 - m, m - r - 1))
    chunk = chunk or max(8, int(1e7 // (k * k * w * w)))  # about 40 MB of shifted crops at a time
    inner = np.array([(dy + r + 1) * k + dx + r + 1 for dy in range(-r, r + 1) for dx in range(-r, r + 1)])
    span = np.arange(-(r + 1), r + 2)
    for start in range(0, len(pairs), chunk):
        p, c = pairs[start:start + chunk], centre[start:start + chunk]
        a = _standardise(prepared[p[:, 0], m:n - m, m:n - m].reshape(len(p), -1))[:, None]
        rows = m + c[:, :1] + span[None]  # (pairs, k): first row of each shifted crop
        cols = m + c[:, 1:] + span[None]
        grid = np.arange(w)
        crops = prepared[p[:, 1][:, None, None, None, None], (rows[:, :, None] + grid)[:, :, None, :, None],
                         (cols[:, :, None] + grid)[:, None, :, None, :]].reshape(len(p), k * k, w * w)
        dist = np.abs(a - _standardise(crops[:, inner])).mean(2)
        best = dist.min(1)
        pos = np.stack(np.divmod(inner[dist.argmin(1)], k), 1).astype(np.float32)  # best whole shift (crop index)
        for step in SUBPIXEL_STEPS:  # then look around it by half and by quarter pixels
            around = pos.copy()
            for sy in (-step, 0, step):
                for sx in (-step, 0, step):
                    if sy or sx:
                        at = np.clip(around + np.array([sy, sx], np.float32), 0, k - 1)
                        d = np.abs(a[:, 0] - _standardise(_bilinear(crops, at, k))).mean(1)
                        better = d < best
                        best, pos[better] = np.where(better, d, best), at[better]
        dists[start:start + chunk] = best
        shifts[start:start + chunk] = pos - (r + 1) + c
    return dists, shifts


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


def neighbour_pairs(prepared: np.ndarray, k: int = NEIGHBOURS, chunk: int = 128,
                    min_similarity: Optional[np.ndarray] = None) -> Iterable[tuple[int, int]]:
    """(i, j), i < j, with j among the k nearest of i (or i of j) by coarse correlation, the best over shifts
    of up to 2 thumbnail px, and at least the smaller of ``min_similarity[i]`` and ``[j]`` (per image; None: no
    floor). Quadratic in the number of images, like the hash comparison (seconds for 5,000)."""
    n = len(prepared)
    if n < 2:
        return
    k = min(k, n - 1)
    floor = np.full(n, -np.inf, np.float32) if min_similarity is None else np.asarray(min_similarity, np.float32)
    base = _coarse(prepared, 0, 0)
    shifted = np.concatenate([_coarse(prepared, dy, dx) for dy, dx in _COARSE_SHIFTS]).T  # (64, shifts * n)
    yield from _nearest_pairs(lambda lo, hi: (base[lo:hi] @ shifted).reshape(-1, len(_COARSE_SHIFTS), n).max(1),
                              n, k, floor, chunk)


def coarse_similarity(prepared: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The coarse correlation of each (i, j) row (8x8 block means), the best over shifts of up to 2 px in steps
    of half a pixel: at whole-pixel steps alone, a copy moved by half a thumbnail pixel (2 px of a 128-px image)
    correlates as little as 0.91 with its original."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if not len(pairs):
        return np.zeros(0, np.float32)
    used = np.unique(pairs)
    row = np.full(len(prepared), -1)
    row[used] = np.arange(len(used))
    p = prepared[used]
    down = np.concatenate([(p[:, :-1] + p[:, 1:]) / 2, p[:, -1:]], 1)  # moved by half a pixel along y
    halves = [p, down, np.concatenate([(p[:, :, :-1] + p[:, :, 1:]) / 2, p[:, :, -1:]], 2),
              np.concatenate([(down[:, :, :-1] + down[:, :, 1:]) / 2, down[:, :, -1:]], 2)]
    base = _coarse(p, 0, 0)
    a, b = row[pairs[:, 0]], row[pairs[:, 1]]
    best = np.full(len(pairs), -np.inf, np.float32)
    for h in halves:
        shifted = np.stack([_coarse(h, dy, dx) for dy, dx in _COARSE_SHIFTS])  # (shifts, used, 64)
        best = np.maximum(best, np.einsum("pd,spd->sp", base[a], shifted[:, b]).max(0))
    return best


def spectrum(prepared: np.ndarray) -> np.ndarray:
    """Each thumbnail's low-frequency amplitude spectrum (Hann-windowed, |k| <= SPECTRUM_K), as a unit vector
    of zero mean. Amplitudes do not change when a picture moves, so a shifted copy is as close to its original
    as a re-encoded one, with no search over shifts (at integer shifts, a copy moved by a fraction of a
    thumbnail pixel ranks below a dozen look-alikes of one modality)."""
    x = prepared - prepared.mean((1, 2), keepdims=True)
    hann = np.hanning(THUMB + 2)[1:-1].astype(np.float32)
    amp = np.abs(np.fft.rfft2(x * hann[:, None] * hann[None, :]))
    k = SPECTRUM_K
    v = np.concatenate([amp[:, :k + 1, :k + 1], amp[:, -k:, :k + 1]], 1).reshape(len(x), -1).astype(np.float32)
    v = v - v.mean(1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)


def spectrum_pairs(prepared: np.ndarray, k: int = SPECTRUM_NEIGHBOURS, chunk: int = 512,
                   min_similarity: Optional[np.ndarray] = None) -> Iterable[tuple[int, int]]:
    """(i, j), i < j, with j among the k nearest of i (or i of j) by amplitude-spectrum correlation, at least
    the smaller of ``min_similarity[i]`` and ``[j]``. One matrix product: quadratic in the number of images,
    about a second for 5,000."""
    n = len(prepared)
    if n < 2:
        return
    k = min(k, n - 1)
    floor = np.full(n, -np.inf, np.float32) if min_similarity is None else np.asarray(min_similarity, np.float32)
    v = spectrum(prepared)
    yield from _nearest_pairs(lambda lo, hi: v[lo:hi] @ v.T, n, k, floor, chunk)


def _nearest_pairs(similarity, n: int, k: int, floor, chunk: int):
    """(i, j) pairs, i < j: each image's k most similar others by ``similarity(lo, hi)`` (rows lo..hi against all
    n), kept when the similarity reaches the floor of both images."""
    for start in range(0, n, chunk):
        sim = similarity(start, start + chunk)
        rows = np.arange(len(sim))
        sim[rows, start + rows] = -np.inf  # not itself
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r, js in enumerate(top):
            for j in js:
                if sim[r, j] >= min(floor[start + r], floor[j]):
                    yield (start + r, int(j)) if start + r < j else (int(j), start + r)


def candidates(prepared: np.ndarray, hashes: list, near_distance: int, small: np.ndarray, hash_pairs) -> set:
    """Stage 1: the pairs worth a pixel check. Hash neighbours (``hash_pairs(hashes, near_distance)``); for small
    images, their NEIGHBOURS nearest by coarse correlation (shifts of whole thumbnail px suit them: a 2-px shift
    of a 28-px image is 2.3 thumbnail px); for the others, their SPECTRUM_NEIGHBOURS nearest by amplitude
    spectrum (a copy moved by a fraction of a pixel stays first) and their LARGE_NEIGHBOURS nearest by coarse
    correlation. A pair of a small and a large image (a large
    one's copy resized below small_image_size) may come from either. Each neighbour pair must also correlate at
    least COARSE_MIN (of the pair's rule): a neighbour is the nearest look-alike, not necessarily a copy."""
    out = set(hash_pairs(hashes, near_distance))
    inf = np.float32(np.inf)
    if small.any():
        out |= set(neighbour_pairs(prepared, NEIGHBOURS, min_similarity=np.where(small, COARSE_MIN["small"], inf)))
    if (~small).any():
        large = np.where(small, inf, -inf)
        pairs = set(spectrum_pairs(prepared, min_similarity=large))
        pairs |= set(neighbour_pairs(prepared, LARGE_NEIGHBOURS, min_similarity=large))
        pairs = np.array(sorted(pairs), np.int64).reshape(-1, 2)
        keep = coarse_similarity(prepared, pairs) >= COARSE_MIN["large"]
        out |= set(map(tuple, pairs[keep].tolist()))
    return out


def thresholds(sizes: list[Optional[tuple[int, int]]], pixel_distance: Optional[float],
               small_image_size: int) -> tuple[np.ndarray, dict]:
    """Per image: its threshold (a pair takes the smaller of its two), and the rule report."""
    small = is_small(sizes, small_image_size)
    if pixel_distance is not None:
        per_image = np.full(len(sizes), float(pixel_distance))
        rule = {"pixel_distance": pixel_distance, "applied": "near_duplicate_pixel_distance (set in the recipe)"}
    else:
        per_image = np.where(small, PIXEL_DISTANCE["small"], PIXEL_DISTANCE["large"])
        rule = {"pixel_distance": {f"below {small_image_size} px": PIXEL_DISTANCE["small"],
                                   f"{small_image_size} px and above": PIXEL_DISTANCE["large"]},
                "applied": "resolution-aware default"}
    rule.update(small_image_size=small_image_size, images_below_small_image_size=int(small.sum()),
                fine_distance=fine_limit(pixel_distance), fine_thumbnail=FINE,
                grouping="complete linkage: every two images of a near group lie within the thresholds")
    return per_image, rule


def is_small(sizes: list[Optional[tuple[int, int]]], small_image_size: int) -> np.ndarray:
    return np.array([s is not None and min(s) < small_image_size for s in sizes], dtype=bool)


def fine_limit(pixel_distance: Optional[float]) -> float:
    """The 64-px threshold: FINE_DISTANCE, scaled with a recipe's near_duplicate_pixel_distance (one knob)."""
    scale = 1.0 if pixel_distance is None else pixel_distance / PIXEL_DISTANCE["large"]
    return round(FINE_DISTANCE * scale, 4)


class Confirmer:
    """The pixel check of a pair of images: the 32-px distance within the smaller of the two images' thresholds
    and, when both images are larger than the 32-px thumbnail and at least small_image_size, the 64-px distance
    within fine_limit. Distances are remembered, so that grouping can ask for any pair at the cost of one
    comparison, and judge it with ``slack`` (a multiple of the thresholds)."""

    def __init__(self, thumbs: np.ndarray, fines: list[Optional[np.ndarray]], limits: np.ndarray,
                 small: np.ndarray, pixel_distance: Optional[float]):
        self.prepared = prepare(thumbs)
        self.limits = np.asarray(limits, np.float32)
        has_fine = np.array([f is not None for f in fines]) & ~np.asarray(small, bool)
        self.fine_row = np.cumsum(has_fine) - 1  # row of image i in self.fine, where has_fine[i]
        self.has_fine = has_fine
        self.fine = prepare_fine(np.stack([f for f, h in zip(fines, has_fine) if h])) if has_fine.any() else None
        self.fine_limit = fine_limit(pixel_distance)
        # (i, j) -> (32-px distance / its threshold, 64-px distance / fine_limit, or 0 where there is none)
        self.known: dict[tuple[int, int], tuple[float, float, float]] = {}

    def _measure(self, todo: np.ndarray) -> None:
        d, shift = pixel_distances(self.prepared, todo)
        ratio = d / np.minimum(self.limits[todo[:, 0]], self.limits[todo[:, 1]])
        fine_ratio = np.zeros(len(todo), np.float32)
        both = (ratio <= LINK_SLACK) & self.has_fine[todo[:, 0]] & self.has_fine[todo[:, 1]]
        if both.any():  # the 64-px check only where the 32-px one can pass, around the alignment it found
            fine, _ = pixel_distances(self.fine, self.fine_row[todo[both]], FINE_MAX_SHIFT,
                                      centre=np.rint(shift[both] * (FINE / THUMB)), reach=FINE_REACH)
            fine_ratio[both] = fine / self.fine_limit
        for (i, j), dist, r, f in zip(todo.tolist(), d.tolist(), ratio.tolist(), fine_ratio.tolist()):
            self.known[(i, j)] = (round(dist, 4), r, f)

    def check(self, pairs, slack: float = 1.0) -> np.ndarray:
        """(i, j) rows (i < j) -> whether each is confirmed within ``slack`` x the thresholds."""
        pairs = [tuple(p) for p in np.asarray(pairs, np.int64).reshape(-1, 2).tolist()]
        todo = sorted({p for p in pairs if p not in self.known})
        if todo:
            self._measure(np.array(todo, np.int64))
        return np.array([max(self.known[p][1:]) <= slack for p in pairs], dtype=bool)

    def all_confirmed(self, pairs: list[tuple[int, int]]) -> bool:
        """Whether every (i, j), i < j, lies within LINK_SLACK x the thresholds: the test for two groups to
        merge. A pair already known to fail answers without computing."""
        if any(max(self.known[p][1:]) > LINK_SLACK for p in pairs if p in self.known):
            return False
        return bool(self.check(pairs, LINK_SLACK).all())

    def distance(self, i: int, j: int) -> float:
        return self.known[(min(i, j), max(i, j))][0]
