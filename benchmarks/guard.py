"""Precision and recall of the leakage guard's near-duplicate rule, before and after the pixel check.

Recall: copies planted into real datasets (a JPEG re-encoding at quality 75, a resize by 0.8 or 1.5, a shift by
2 px along both axes with the border repeated, a brightness change by 10%) must end up in their original's
group. Sizes: 28 px (PneumoniaMNIST, BreastMNIST, as they are) and 64 / 128 / 224 px (Brain MRI Training,
resized; 224 is its own size). Precision: of the near-duplicate pairs flagged among the real images (pairs of
pixel-identical images aside), the share that are the same picture by a reference check independent of the
guard: at native resolution, after the best shift of up to 2 px and the best brightness/contrast fit
(least squares), the mean absolute difference is under 5 grey levels. The default run on PneumoniaMNIST:
how many training images each rule removes as copies of validation images.
"""
import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from hf_medtl.arguments import DataArguments
from hf_medtl.data import check, load_splits
from hf_medtl.data.groups import UnionFind, multi

DATA = Path(__file__).resolve().parents[1].parent.parent / "shared" / "datasets"
KINDS = ("re-encoded", "resized", "shifted", "brightness")


def shared(name: str) -> Path:
    for root in (DATA, Path("/work/shared/datasets")):
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
    if size == 28:
        for name in ("pneumoniamnist", "breastmnist"):
            z = np.load(shared(f"medmnist/{name}.npz"))
            yield name, list(np.concatenate([z["train_images"], z["val_images"]]))
        return
    paths = sorted(shared("brain_tumor_mri/Training").rglob("*.jpg"))
    yield "brain_mri", [np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.LANCZOS)
                                   if size != 224 else Image.open(p).convert("L")) for p in paths]


def same_picture(a: np.ndarray, b: np.ndarray, max_shift: int = 2, grey_levels: float = 5.0) -> bool:
    """The reference check: b (resized to a's size) fits a within grey_levels after shift and affine grey fit."""
    if a.shape != b.shape:
        b = np.asarray(Image.fromarray(b).resize(a.shape[::-1], Image.Resampling.LANCZOS))
    a, b, n = a.astype(np.float64), b.astype(np.float64), max_shift
    h, w = a.shape
    best = np.inf
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            x = b[n + dy:h - n + dy, n + dx:w - n + dx].ravel()
            y = a[n:h - n, n:w - n].ravel()
            design = np.stack([x, np.ones_like(x)], 1)
            coef = np.linalg.lstsq(design, y, rcond=None)[0]
            best = min(best, np.abs(design @ coef - y).mean())
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
    return {"exact": multi(exact.groups()), "near": [(m, None) for m in multi(near.groups())], "pairs": pairs,
            "rule": "hash only", "candidates": len(pairs), "rejected": 0}


def measure(name: str, images: list, per_dataset: int, rng) -> dict:
    n = len(images)
    originals = rng.choice(n, per_dataset, replace=False)
    planted = [(int(i), plant(images[i], kind, rng)) for i in originals for kind in KINDS]
    infos = check.inspect_all(images + [c for _, c in planted])
    row = {"dataset": name, "images": n, "planted": len(planted)}
    for rule, groups in (("before", hash_only_groups), ("after", check.duplicate_groups)):
        start = time.perf_counter()
        uf = UnionFind(len(infos))
        dup = groups(infos, 4, uf)
        roots = uf.groups()
        found = [roots[i] == roots[n + k] for k, (i, _) in enumerate(planted)]
        flagged = [(i, j) for i, j in dup["pairs"] if j < n and infos[i].sha != infos[j].sha]
        true = sum(same_picture(images[i], images[j]) for i, j in flagged)
        row[rule] = {"recall": round(float(np.mean(found)), 4),
                     "recall_by_kind": {k: round(float(np.mean(found[x::len(KINDS)])), 4) for x, k in enumerate(KINDS)},
                     "pairs_flagged": len(flagged), "pairs_same_picture": int(true),
                     "precision": round(true / len(flagged), 4) if flagged else None,
                     "seconds": round(time.perf_counter() - start, 1)}
    return row


def removed_on_pneumoniamnist() -> dict:
    args = DataArguments(npz_file=str(shared("medmnist/pneumoniamnist.npz")))
    out = {}
    for rule, groups in (("before", hash_only_groups), ("after", check.duplicate_groups)):
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
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128, 224])
    p.add_argument("--out", default="outputs/leakage_guard.json")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for size in a.sizes:
        sets = list(datasets(size))
        for name, images in sets:
            row = {"size": size, **measure(name, images, a.per_size // len(sets), rng)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"rows": rows, "pneumoniamnist_default_run": removed_on_pneumoniamnist()}
    print(json.dumps(result["pneumoniamnist_default_run"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| size | dataset | planted copies | recall before | recall after | flagged pairs before | precision before "
          "| flagged pairs after | precision after |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, f = r["before"], r["after"]
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        print(f"| {r['size']} | {r['dataset']} | {r['planted']} | {pct(b['recall'])} | {pct(f['recall'])} | "
              f"{b['pairs_flagged']} | {pct(b['precision'])} | {f['pairs_flagged']} | {pct(f['precision'])} |")
