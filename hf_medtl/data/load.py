"""load_splits: the data stage in four steps — decode every image once, group copies and patients, settle
copies that straddle a split the source fixed, and assign the rest (or reuse the previous manifest)."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from hf_medtl.data import check, data_report, folds, groups
from hf_medtl.data.manifest import EXCLUDED, Splits, reuse
from hf_medtl.data.sources import scan_source
from hf_medtl.data.types import DataError
from hf_medtl.data.multilabel import label_set
from hf_medtl.data.split import SPLITS, grouped_stratified_assign, multilabel_assign, stratified_assign

logger = logging.getLogger("hf_medtl")

PROTECTION = {"test": 2, "validation": 1, "train": 0}  # a duplicate keeps the copy in the most protected split
SPLIT_SETTINGS = ("val_ratio", "test_ratio", "dedupe", "near_duplicate_distance", "near_duplicate_pixel_distance",
                  "small_image_size", "group_regex", "cross_split_duplicates", "on_bad_image", "data_check", "cv_folds",
                  "cv_fold", "cv_seed", "imbalance_ratio", "minority_classes")


def load_splits(a, seed: int, report_dir: Optional[Path] = None, write: bool = True,
                write_dir: Optional[Path] = None) -> Splits:
    """Scan, check every image, group duplicates and patients, and assign splits (or reuse the manifest
    in report_dir when the data has not changed). Writes data_report.json, when ``write``, into ``write_dir``
    (default report_dir)."""
    seed = seed if a.split_seed is None else a.split_seed
    source = scan_source(a)
    n = len(source.samples)
    splits = Splits(source.root, source.samples, ["train"] * n, source.classes, source.ignored, [""] * n, [""] * n,
                    [None] * n, multi_label=source.multi_label)
    splits.report.update(files=n, ignored_non_image_files=[str(p) for p in source.ignored],
                         split_settings={**{k: getattr(a, k) for k in SPLIT_SETTINGS}, "seed": seed})
    out = (write_dir or report_dir) if write else None
    bad = _decode(splits, a)
    roots = _group(splits, a)
    _cross_split(splits, roots, source.fixed, a.cross_split_duplicates)
    if bad and a.on_bad_image == "error":
        data_report.write(out, splits.report)
        first = splits.report["bad_images"][0]
        raise DataError(f"{len(bad)} unreadable image(s), e.g. '{first['path']}' ({first['reason']}); all are listed "
                        f"in {out or '.'}/data_report.json. Remove or fix them, or set on_bad_image 'skip'")
    _assign(splits, roots, source, seed, report_dir, a)
    problem = _check_usable(splits)
    data_report.write(out, splits.report)
    if problem:
        raise DataError(f"{problem}; see {out or '.'}/data_report.json")
    return splits


def _decode(splits: Splits, a) -> list[int]:
    """Step 1: decode every image once; unreadable ones are excluded with the reason."""
    infos = (check.inspect_all([s.source for s in splits.samples], a.max_image_pixels) if a.data_check
             else [check.ImageInfo() for _ in splits.samples])
    splits.infos = infos
    splits.shas = [info.sha for info in infos]
    bad = [i for i, info in enumerate(infos) if not info.ok]
    splits.report["bad_images"] = [{"path": splits.relpath(splits.samples[i]), "reason": infos[i].reason} for i in bad]
    splits.report["on_bad_image"] = a.on_bad_image
    for i in bad:
        splits.assignment[i], splits.notes[i] = EXCLUDED, f"unreadable: {infos[i].reason}"
    return bad


def _group(splits: Splits, a) -> list[int]:
    """Step 2: leakage groups from exact/near duplicates, a CSV group column and a filename regex."""
    samples, n = splits.samples, len(splits.samples)
    uf = groups.UnionFind(n)
    dup = (check.duplicate_groups(splits.infos, a.near_duplicate_distance, uf, a.near_duplicate_pixel_distance,
                                  a.small_image_size) if a.dedupe and a.data_check
           else {"exact": [], "near": [], "pairs": {}, "rule": None, "candidates": 0, "rejected": 0})
    by_key: dict[str, int] = {}
    pattern = re.compile(a.group_regex) if a.group_regex else None
    for i, s in enumerate(samples):
        key = s.group
        if pattern is not None:
            m = pattern.search(s.path.name)
            if m is None:
                raise DataError(f"group_regex '{a.group_regex}' does not match file name '{s.path.name}'; "
                                "fix the pattern (it is searched in each file name)")
            key = m.group(1) if m.groups() else m.group(0)
        if key is not None:
            uf.union(i, by_key.setdefault(key, i))
    roots = uf.groups()
    splits.groups = [f"g{r}" for r in roots]
    members = groups.members(roots)
    rel = splits.relpath
    splits.report["duplicates"] = {
        "exact_groups": len(dup["exact"]), "images_in_exact_groups": sum(map(len, dup["exact"])),
        "near_distance": a.near_duplicate_distance if a.dedupe else None, "near_groups": len(dup["near"]),
        "images_in_near_groups": sum(len(m) for m, *_ in dup["near"]),
        # Every near candidate (hash within near_distance, or a coarse nearest neighbour) checked on the pixels.
        "near_rule": dup["rule"], "near_candidates": dup["candidates"], "near_candidates_rejected": dup["rejected"],
        "exact": [[rel(samples[i]) for i in g] for g in dup["exact"]],
        "near": [{"images": [rel(samples[i]) for i in g], "pixel_distance": d, "threshold": t}
                 for g, d, t in dup["near"]]}
    sha, first = splits.shas, {}
    rep = [i if h is None else first.setdefault(h, i) for i, h in enumerate(splits.shas)]  # exact copy -> first

    def pair_distance(i: int, j: int):  # what confirmed two images as copies: 0 (same pixels), a distance, or none
        if sha[i] is not None and sha[i] == sha[j]:
            return 0.0
        i, j = sorted((rep[i], rep[j]))
        return dup["pairs"].get((i, j))

    spanning = [m for m in members.values() if len({samples[i].label for i in m}) > 1]
    splits.report["leakage_groups"] = {
        "groups_of_2_or_more": sum(len(m) > 1 for m in members.values()),
        "images_in_them": sum(len(m) for m in members.values() if len(m) > 1), "group_regex": a.group_regex,
        "patient_groups": len(by_key),  # distinct patient ids (group column or group_regex), each kept in one split
        # Copies with different labels: a labelling error, or a false near-duplicate match; either way, look.
        # Each lists the pairs of differently labelled images that were matched directly, with their distance.
        "spanning_labels": [{"images": [rel(samples[i]) for i in m], "labels": sorted({samples[i].label for i in m}),
                             "pairs": [{"images": [rel(samples[i]), rel(samples[j])], "pixel_distance": d}
                                       for x, i in enumerate(m) for j in m[x + 1:]
                                       if samples[i].label != samples[j].label
                                       and (d := pair_distance(i, j)) is not None]}
                            for m in spanning]}
    if spanning and not splits.multi_label:  # one patient's images differ in findings
        logger.warning(f"{len(spanning)} leakage group(s) hold images of different labels (listed under "
                       "leakage_groups.spanning_labels in data_report.json): check those labels")
    return roots


def _cross_split(splits: Splits, roots: list[int], fixed: list[Optional[str]], action: str) -> None:
    """Step 3: copies that straddle a split the source fixed (an official test folder, MedMNIST's val)."""
    crossing = []
    for idx in groups.members(roots).values():
        fixed_here = {fixed[i] for i in idx if fixed[i] is not None}
        if not fixed_here or (len(fixed_here) == 1 and all(fixed[i] is not None for i in idx)):
            continue
        keep = max(fixed_here, key=PROTECTION.get)
        for i in idx:
            if fixed[i] != keep and splits.assignment[i] != EXCLUDED:
                crossing.append(i)
                if action == "remove":
                    splits.assignment[i], splits.notes[i] = EXCLUDED, f"duplicate of a {keep} image"
    splits.report["cross_split_duplicates"] = {"found": len(crossing), "action": action,
                                               "images": [splits.relpath(splits.samples[i]) for i in crossing]}


def _assign(splits: Splits, roots: list[int], source, seed: int, report_dir: Optional[Path], a) -> None:
    """Step 4: the fixed samples keep their split; the free ones are reused from the manifest or split anew.
    A cv fold or an imbalance level (hf_medtl.data.folds) then reshapes train/validation; test stays."""
    n = len(splits.samples)
    usable = [i for i in range(n) if splits.assignment[i] != EXCLUDED]
    for i in usable:
        if source.fixed[i] is not None:
            splits.assignment[i] = source.fixed[i]
    free = [i for i in usable if source.fixed[i] is None]
    reused = reuse(splits, free, report_dir, splits.report) if report_dir else False
    if not reused and source.ratios:
        labels = [splits.samples[i].label for i in free]
        sizes = {r: len(m) for r, m in groups.members(roots).items()}
        if source.multi_label:
            assign = multilabel_assign([label_set(splits.samples[i]) for i in free], [roots[i] for i in free],
                                       source.ratios, seed)
        elif any(sizes[roots[i]] > 1 for i in free):
            assign = grouped_stratified_assign(labels, [roots[i] for i in free], source.ratios, seed)
        else:
            assign = stratified_assign(labels, source.ratios, seed)
        for i, split in zip(free, assign):
            splits.assignment[i] = split
    folds.apply_fold(splits, roots, a, seed)
    folds.subsample_train(splits, a, seed)
    splits.report["split_counts"] = splits.counts()
    splits.report["excluded"] = splits.assignment.count(EXCLUDED)


def _check_usable(splits: Splits) -> Optional[str]:
    """Why the split cannot be trained and scored (one line), or None. A split that ends up empty, or a
    training split without every class, is refused here, before any model is built."""
    labels = label_set if splits.multi_label else (lambda s: [s.label])
    have = {split: {x for s in splits.files(split) for x in labels(s)} for split in SPLITS}
    counts = splits.counts()
    hint = ("duplicate or patient grouping may have put whole classes in one split (see duplicates and "
            "leakage_groups)")
    for split in SPLITS:
        if counts[split] == 0:
            return f"the {split} split is empty after the data check; {hint}"
    missing = sorted(set(splits.classes) - have["train"])
    if missing:
        return f"the train split has no image of class(es) {missing}; {hint}"
    for split in ("validation", "test"):
        if have[split] != set(splits.classes):
            logger.warning(f"the {split} split has no image of {sorted(set(splits.classes) - have[split])}")
    return None
