"""Seeded train/validation/test assignment: stratified by class, and grouped (duplicates, patients) when needed."""
from __future__ import annotations

import numpy as np

from hf_medtl.data.groups import members as group_members
from hf_medtl.data.types import DataError

SPLITS = ("train", "validation", "test")


def split_seed(data_args, seed: int) -> int:
    """The seed the split is drawn with: the recipe's ``split_seed``, or its training ``seed`` when unset (so that
    the runs of a study, each with its own training seed, can share one split by pinning this)."""
    return seed if data_args.split_seed is None else data_args.split_seed


def stratified_assign(labels: list[str], ratios: dict[str, float], seed: int) -> list[str]:
    """Give each item a split name; every class is divided by ``ratios`` (the rest goes to train).

    Deterministic for a given label list and seed. Each non-train split gets at least one image of every
    class, so that per-class metrics exist on all of them.
    """
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        need = len(ratios) + 1
        if len(idx) < need:
            raise DataError(f"class '{label}' has {len(idx)} image(s); a stratified split into train + "
                            f"{' + '.join(ratios)} needs at least {need}: add images or merge the class")
        idx = [idx[i] for i in rng.permutation(len(idx))]
        start = 0
        for split, ratio in ratios.items():
            n = min(max(1, round(len(idx) * ratio)), len(idx) - start - 1)
            for i in idx[start:start + n]:
                out[i] = split
            start += n
    return out


def grouped_stratified_assign(labels: list[str], groups: list, ratios: dict[str, float], seed: int) -> list[str]:
    """Like stratified_assign, but every group (duplicates, a patient) lands whole in one split.

    Groups are placed largest first (ties in seeded random order), each into the split whose per-class
    targets it fills the least so far; the result is stratified up to group granularity.
    """
    rng = np.random.default_rng(seed)
    members = group_members(groups)
    keys = list(members)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    keys.sort(key=lambda k: -len(members[k]))  # stable: random order within a size
    n_class: dict[str, int] = {}
    for lab in labels:
        n_class[lab] = n_class.get(lab, 0) + 1
    shares = {**ratios, "train": 1.0 - sum(ratios.values())}
    target = {s: {c: r * n for c, n in n_class.items()} for s, r in shares.items()}
    current = {s: {c: 0 for c in n_class} for s in shares}
    out = ["train"] * len(labels)
    for key in keys:
        comp: dict[str, int] = {}
        for i in members[key]:
            comp[labels[i]] = comp.get(labels[i], 0) + 1

        def room(split):
            return sum(k * (target[split][c] - current[split][c]) / target[split][c] for c, k in comp.items())

        best = max(shares, key=lambda s: (room(s), s == "train"))
        for i in members[key]:
            out[i] = best
        for c, k in comp.items():
            current[best][c] += k
    return out


def multilabel_assign(label_sets: list[list[str]], groups: list, ratios: dict[str, float], seed: int) -> list[str]:
    """Iterative stratification (Sechidis et al. 2011) over groups: the rarest label first, each group to the
    split that still wants most of it, so that every label reaches every split when it has enough images."""
    rng = np.random.default_rng(seed)
    shares = {**ratios, "train": 1.0 - sum(ratios.values())}
    members = group_members(groups)
    keys = list(members)
    keys = [keys[j] for j in rng.permutation(len(keys))]
    labels = sorted({x for s in label_sets for x in s})
    count = {x: sum(x in s for s in label_sets) for x in labels}
    want = {s: {x: r * count[x] for x in labels} for s, r in shares.items()}
    size = {s: r * len(label_sets) for s, r in shares.items()}
    group_labels = {k: [x for i in members[k] for x in label_sets[i]] for k in keys}
    order = sorted(keys, key=lambda k: min((count[x] for x in group_labels[k]), default=len(label_sets) + 1))
    out = ["train"] * len(label_sets)
    for k in order:
        rarest = min(group_labels[k], key=count.get, default=None)
        if rarest is not None:
            best = max(shares, key=lambda s: (want[s][rarest], size[s], s == "train"))
        else:
            best = max(shares, key=lambda s: (size[s], s == "train"))
        for i in members[k]:
            out[i] = best
        for x in group_labels[k]:
            want[best][x] -= 1
        size[best] -= len(members[k])
    return out
