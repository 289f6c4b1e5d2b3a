"""Precision and recall of the leakage guard's near-duplicate rule, before and after the pixel check.

Recall: copies planted into real datasets (a JPEG re-encoding at quality 75, a resize by 0.8 or 1.5, a shift by
2 px along both axes with the border repeated, a brightness change by 10%) must end up in their original's
group. Sizes: 28 px (PneumoniaMNIST, BreastMNIST, as they are), 64 / 128 / 224 px (Brain MRI Training,
resized; 224 is its own size) and 96 px (synthetic organ scans of one modality, tests/data/organs.py: 450
distinct acquisitions, 3-4 per patient, none a copy of another; issue 31's chaining data). Precision: of the near-duplicate pairs flagged among the real images (pairs of
pixel-identical images aside), the share that are the same picture by a reference check independent of the
guard: at native resolution, after the best shift of up to 2 px and the best grey mapping (linear least
squares, or histogram matching), the mean absolute difference is under 5 grey levels. The default run on PneumoniaMNIST:
how many training images each rule removes as copies of validation images. Rules: "hash only" (commit 2ba22f3),
"union" (every candidate confirmed on the 32-px pixels, groups by union-find: the default until issue 31) and the
default (a 64-px check as well, groups by complete linkage); "largest group" is the share of the dataset's images
in its largest near/exact group.
"""
import argparse
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageEnhance

from hf_medtl.config.arguments import DataArguments
from hf_medtl.data import check, load_splits, near
from hf_medtl.data.groups import UnionFind, multi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/data/organs.py: the synthetic look-alikes
DATA = [REPO.parent / "shared" / "datasets", REPO.parent.parent / "shared" / "datasets"]  # a checkout, a worktree
KINDS = ("re-encoded", "resized", "shifted", "brightness")


def shared(name: str) -> Path:
    for root in DATA:
        if (root / name).exists():
            return root / name
    raise SystemExit(f"shared dataset {name} not found")


def plant(arr: np.ndarray, kind: str, rng) -> np.ndarray:
    img, w = Image.fromarray(arr), arr.shape[1]
    if kind == "re-encoded":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=75)
        return np.asarray(Image.open(buf).convert("L"))
    if kind == "resized":
        f = rng.choice([0.8, 1.5])
        return np.asarray(img.resize((round(w * f), round(arr.shape[0] * f)), Image.Resampling.BILINEAR))
    if kind == "shifted":
        dy, dx = rng.choice([-2, 2], 2)
        return np.pad(arr, 2, mode="edge")[2 + dy:2 + dy + arr.shape[0], 2 + dx:2 + dx + w]
    return np.asarray(ImageEnhance.Brightness(img).enhance(rng.choice([0.9, 1.1])))


def datasets(size: int):
    if size == 96:
        from tests.data.organs import organ_images

        yield "organs", [img for img, _, _ in organ_images()]
        return
    if size == 28:
        for name in ("pneumoniamnist", "breastmnist"):
            z = np.load(shared(f"medmnist/{name}.npz"))
            yield name, list(np.concatenate([z["train_images"], z["val_images"]]))
        return
    paths = sorted(shared("brain_tumor_mri/Training").rglob("*.jpg"))
    yield "brain_mri", [np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.LANCZOS)
                                   if size != 224 else Image.open(p).convert("L")) for p in paths]


def same_picture(a: np.ndarray, b: np.ndarray, max_shift: int = 2, grey_levels: float = 5.0) -> bool:
    """The reference check: b (resized to a's size), at its best shift of up to max_shift px, fits a within
    grey_levels on average after the best linear grey mapping (least squares) or, failing that, after
    histogram matching (any monotonic grey mapping: another window or gamma of the same picture)."""
    if a.shape != b.shape:
        b = np.asarray(Image.fromarray(b).resize(a.shape[::-1], Image.Resampling.LANCZOS))
    a, b, n = a.astype(np.float64), b.astype(np.float64), max_shift
    h, w = a.shape
    y = a[n:h - n, n:w - n].ravel()
    best, at = np.inf, None
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            x = b[n + dy:h - n + dy, n + dx:w - n + dx].ravel()
            slope = np.cov(x, y, bias=True)[0, 1] / max(x.var(), 1e-9)
            mad = np.abs(slope * (x - x.mean()) + y.mean() - y).mean()
            if mad < best:
                best, at = mad, x
    if best >= grey_levels:  # histogram matching at that shift: b's k-th smallest value becomes a's
        matched = np.empty_like(at)
        matched[np.argsort(at, kind="stable")] = np.sort(y)
        best = min(best, np.abs(matched - y).mean())
    return best < grey_levels


def hash_only_groups(infos, near_distance, uf=None, *args):
    """The rule before the pixel check (commit 2ba22f3): every hash match within near_distance is a copy."""
    uf = uf or UnionFind(len(infos))
    first, exact, near = {}, UnionFind(len(infos)), UnionFind(len(infos))
    for i, info in enumerate(infos):
        if info.sha is not None and (j := first.setdefault(info.sha, i)) != i:
            uf.union(i, j)
            exact.union(i, j)
    pairs = {}
    for i, j in check.near_pairs([info.phash for info in infos], near_distance):
        uf.union(i, j)
        near.union(i, j)
        pairs[(i, j)] = None
    return {"exact": multi(exact.groups()), "near": [(m, None, None) for m in multi(near.groups())], "pairs": pairs,
            "rule": "hash only", "candidates": len(pairs), "rejected": 0}


def union_groups(infos, near_distance, uf=None, *args):
    """The rule before issue 31: candidates (hash, or any of the 8 coarse nearest neighbours) confirmed on the
    32-px pixels alone, and grouped by union-find (transitive: look-alikes can chain)."""
    uf = uf or UnionFind(len(infos))
    first, exact = {}, UnionFind(len(infos))
    for i, info in enumerate(infos):
        if info.sha is not None and (j := first.setdefault(info.sha, i)) != i:
            uf.union(i, j)
            exact.union(i, j)
    reps = list(first.values())
    prepared = near.prepare(np.stack([infos[i].thumb for i in reps]))
    cand = set(check.near_pairs([infos[i].phash for i in reps], near_distance)) | set(near.neighbour_pairs(prepared))
    cand = np.array(sorted(cand), dtype=np.int64).reshape(-1, 2)
    dist, _ = near.pixel_distances(prepared, cand)
    per_image, rule = near.thresholds([info.size for info in infos], None, near.SMALL_IMAGE_SIZE)
    limit = per_image[reps]
    ok = dist <= np.minimum(limit[cand[:, 0]], limit[cand[:, 1]])
    pairs, linked = {}, UnionFind(len(infos))
    for (a, b), d in zip(cand[ok], dist[ok]):
        pairs[(reps[a], reps[b])] = float(d)
        uf.union(reps[a], reps[b])
        linked.union(reps[a], reps[b])
    return {"exact": multi(exact.groups()), "near": [(m, None, None) for m in multi(linked.groups())], "pairs": pairs,
            "rule": "union", "candidates": len(cand), "rejected": int((~ok).sum())}


def eye_check_sheet(path: Path, images: list, pairs: list, most: int = 24) -> None:
    """A PNG of (a random sample of) the flagged pairs the reference check did not confirm, side by side, to
    look at: the share that is the same picture by eye completes the precision."""
    rng = np.random.default_rng(1)  # its own: the planted copies do not depend on whether sheets are drawn
    pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), min(most, len(pairs)), replace=False))]
    s, cols = 96, 4
    sheet = Image.new("L", (cols * (2 * s + 16), -(-len(pairs) // cols) * (s + 8)), 255)
    for k, (i, j) in enumerate(pairs):
        x, y = (k % cols) * (2 * s + 16), (k // cols) * (s + 8)
        for off, idx in ((0, i), (s, j)):
            sheet.paste(Image.fromarray(images[idx]).resize((s, s), Image.Resampling.NEAREST), (x + off, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def measure(name: str, images: list, per_dataset: int, rng, figures: Optional[Path] = None,
            rules=("before", "union", "after")) -> dict:
    n = len(images)
    originals = rng.choice(n, per_dataset, replace=False)
    planted = [(int(i), plant(images[i], kind, rng)) for i in originals for kind in KINDS]
    infos = check.inspect_all(images + [c for _, c in planted])
    row = {"dataset": name, "images": n, "planted": len(planted)}
    for rule, groups in RULES.items():
        if rule not in rules:
            continue
        start = time.perf_counter()
        uf = UnionFind(len(infos))
        dup = groups(infos, 4, uf)
        roots = uf.groups()
        found = [roots[i] == roots[n + k] for k, (i, _) in enumerate(planted)]
        flagged = [(i, j) for i, j in dup["pairs"] if j < n and infos[i].sha != infos[j].sha]
        unconfirmed = [(i, j) for i, j in flagged if not same_picture(images[i], images[j])]
        true = len(flagged) - len(unconfirmed)
        if figures is not None and unconfirmed:
            eye_check_sheet(figures / f"{name}_{images[0].shape[0]}px_{rule}.png", images, unconfirmed)
        row[rule] = {"recall": round(float(np.mean(found)), 4),
                     "recall_by_kind": {k: round(float(np.mean(found[x::len(KINDS)])), 4) for x, k in enumerate(KINDS)},
                     "pairs_flagged": len(flagged), "pairs_same_picture": int(true),
                     "precision": round(true / len(flagged), 4) if flagged else None,
                     "candidates": dup["candidates"],
                     "largest_group": round(max(Counter(roots[:n]).values()) / n, 4),
                     "seconds": round(time.perf_counter() - start, 1)}
    return row


RULES = {"before": hash_only_groups, "union": union_groups, "after": check.duplicate_groups}


def removed_on_pneumoniamnist() -> dict:
    args = DataArguments(npz_file=str(shared("medmnist/pneumoniamnist.npz")))
    out = {}
    for rule, groups in (("before", hash_only_groups), ("union", union_groups), ("after", check.duplicate_groups)):
        original, check.duplicate_groups = check.duplicate_groups, groups
        try:
            splits = load_splits(args, 42, write=False)
        finally:
            check.duplicate_groups = original
        out[rule] = {"train_images_removed": splits.report["cross_split_duplicates"]["found"],
                     "near_groups": splits.report["duplicates"]["near_groups"], "split_counts": splits.counts()}
    return out


def main(argv):
    p = argparse.ArgumentParser(prog="leakage.py guard")
    p.add_argument("--per-size", type=int, default=200, help="real images copied per size (4 copies each)")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128, 224, 96], help="96: the synthetic organs")
    p.add_argument("--out", default="outputs/leakage_guard.json")
    p.add_argument("--figures", help="folder for eye-check sheets of the flagged pairs the reference check rejects")
    p.add_argument("--no-default-run", action="store_true", help="skip the PneumoniaMNIST load_splits comparison")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for size in a.sizes:
        sets = list(datasets(size))
        for name, images in sets:
            row = {"size": size, **measure(name, images, a.per_size // len(sets), rng,
                                           Path(a.figures) if a.figures else None, a.rules)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"rows": rows, "pneumoniamnist_default_run": None if a.no_default_run else removed_on_pneumoniamnist()}
    print(json.dumps(result["pneumoniamnist_default_run"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    rules = a.rules
    print("| size | dataset | planted copies | " + " | ".join(f"{x} {r}" for r in rules for x in (
        "recall", "flagged pairs", "precision", "largest group")) + " |\n|---|---|---|" + "---|" * 4 * len(rules))
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in rows:
        print(f"| {r['size']} | {r['dataset']} | {r['planted']} | " + " | ".join(
            f"{pct(r[x]['recall'])} | {r[x]['pairs_flagged']} | {pct(r[x]['precision'])} | {pct(r[x]['largest_group'])}"
            for x in rules) + " |")
