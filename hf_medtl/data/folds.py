"""Study hooks on a finished split: the K-fold partition of the non-test pool (``hf-medtl cv``) and the
subsampled training split of the imbalance study (``hf-medtl study imbalance``). Both leave the test split
exactly as the normal split made it, so that every fold and level is scored on the same images."""
from __future__ import annotations

import numpy as np

from hf_medtl.data.groups import members
from hf_medtl.data.manifest import EXCLUDED, Splits
from hf_medtl.data.types import DataError


def fold_of(labels: list[str], groups: list, k: int, seed: int) -> list[int]:
    """The fold (0..k-1) of each item: stratified by label, every group whole in one fold (scikit-learn's
    StratifiedGroupKFold, shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if len(members(groups)) < k:
        raise DataError(f"cv_folds {k}: the non-test pool holds only {len(members(groups))} leakage group(s); "
                        f"use at most that many folds")
    out = [0] * len(labels)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        for i in held:
            out[i] = fold
    return out


def apply_fold(splits: Splits, roots: list[int], a, seed: int) -> None:
    """Fold ``cv_fold`` of the train + validation pool becomes validation, the other folds train."""
    if not a.cv_folds:
        return
    pool = [i for i, split in enumerate(splits.assignment) if split in ("train", "validation")]
    seed = seed if a.cv_seed is None else a.cv_seed
    folds = fold_of([splits.samples[i].label for i in pool], [roots[i] for i in pool], a.cv_folds, seed)
    for i, fold in zip(pool, folds):
        splits.assignment[i] = "validation" if fold == a.cv_fold else "train"
    splits.report["cv"] = {"folds": a.cv_folds, "fold": a.cv_fold, "seed": seed, "pool": len(pool),
                           "fold_sizes": [folds.count(f) for f in range(a.cv_folds)]}


def subsample_train(splits: Splits, a, seed: int) -> None:
    """Every minority class of the training split keeps at most ``imbalance_ratio`` x the majority class's
    count (a seeded random subset); the rest is excluded with a note. Validation and test are untouched."""
    if a.imbalance_ratio is None:
        return
    train = members(s.label if split == "train" else None for s, split in zip(splits.samples, splits.assignment))
    train.pop(None, None)
    majority = max(sorted(train), key=lambda c: len(train[c]))
    minority = a.minority_classes or [c for c in splits.classes if c != majority]
    unknown = sorted(set(minority) - set(splits.classes))
    if unknown or majority in minority:
        raise DataError(f"minority_classes {minority}: " + (f"{unknown} are not classes {splits.classes}" if unknown
                        else f"'{majority}' is the majority class; list the classes to subsample"))
    keep = max(1, round(a.imbalance_ratio * len(train[majority])))
    rng = np.random.default_rng(seed)
    before = {c: len(train.get(c, [])) for c in splits.classes}
    for c in minority:
        idx = train.get(c, [])
        if len(idx) > keep:
            for j in sorted(rng.permutation(len(idx))[keep:]):
                splits.assignment[idx[j]] = EXCLUDED
                splits.notes[idx[j]] = f"imbalance study: left out of train (ratio {a.imbalance_ratio:g})"
    after = {c: sum(1 for s, split in zip(splits.samples, splits.assignment) if split == "train" and s.label == c)
             for c in splits.classes}
    splits.report["imbalance"] = {"ratio": a.imbalance_ratio, "majority": majority, "minority": minority,
                                  "train_before": before, "train_after": after}
