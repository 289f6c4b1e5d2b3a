"""load_splits: the data stage in four steps — decode every image once, group copies and patients, settle
copies that straddle a split the source fixed, and assign the rest (or reuse the previous manifest)."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from hf_medtl.data import check, data_report, folds, groups, near_memo
from hf_medtl.data.manifest import EXCLUDED, Splits, reuse
from hf_medtl.data.sources import scan_source
from hf_medtl.data.types import DataError
from hf_medtl.data.multilabel import label_set
from hf_medtl.data.split import SPLITS, grouped_stratified_assign, multilabel_assign, split_seed, stratified_assign

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
    seed = split_seed(a, seed)
    if not 0 < a.max_group_share <= 1:
        raise DataError(f"max_group_share {a.max_group_share}: must lie in (0, 1] (a share of the images)")
    source = scan_source(a)
    _check_labels(source)
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
        raise DataError(f"{check.unreadable(len(bad), first['path'], first['reason'])}; all are listed in "
                        f"{out or '.'}/data_report.json. Remove or fix them, or set on_bad_image 'skip'")
    problem = _check_group_share(splits, a)
    if not problem:
        _assign(splits, roots, source, seed, report_dir, a)
        problem = _check_usable(splits, a)
    data_report.write(out, splits.report)
    if problem:
        raise DataError(f"{problem}; see {out or '.'}/data_report.json")
    return splits


def _check_labels(source) -> None:
    """Labels that differ only in case or surrounding white space ('Lesion', 'lesion ') are one class written two
    ways, not two classes: the run stops with one line listing them."""
    labels = ({x for s in source.samples for x in label_set(s)} | set(source.classes or [])) if source.multi_label \
        else {s.label for s in source.samples}
    spellings: dict[str, list[str]] = {}
    for lab in sorted(labels):
        spellings.setdefault(lab.strip().casefold(), []).append(lab)
    clashes = [v for v in spellings.values() if len(v) > 1]
    if clashes:
        count = {}
        for s in source.samples:
            for x in (label_set(s) if source.multi_label else [s.label]):
                count[x] = count.get(x, 0) + 1
        listed = "; ".join(" vs ".join(f"{x!r} ({count.get(x, 0)} images)" for x in v) for v in clashes)
        raise DataError(f"labels that differ only in case or surrounding spaces: {listed}; write each class one "
                        "way (rename the folder or fix the label column) so that they are one class")


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


def _memo_folder(a) -> Optional[Path]:
    """Where a rerun finds the near-duplicate search of the same files (the image cache's folder; none when the
    recipe turns the cache off)."""
    if not a.data_cache:
        return None
    from hf_medtl.data.cache import default_dir

    return default_dir(a.data_cache_dir)


def _duplicates_report(splits: Splits, a, dup: dict) -> dict:
    """data_report.json's "duplicates": what the exact and near-duplicate search grouped, and how."""
    samples, rel = splits.samples, splits.relpath
    return {
        "exact_groups": len(dup["exact"]), "images_in_exact_groups": sum(map(len, dup["exact"])),
        "near_distance": a.near_duplicate_distance if a.dedupe else None, "near_groups": len(dup["near"]),
        "images_in_near_groups": sum(len(m) for m, *_ in dup["near"]),
        # Every near candidate (hash within near_distance, or a coarse nearest neighbour) checked on the pixels.
        "near_rule": dup["rule"], "near_candidates": dup["candidates"], "near_candidates_rejected": dup["rejected"],
        # confirmed pairs whose images stay in different groups: each is a copy of one member of a group, not of all
        "near_pairs_left_apart": dup.get("left_apart", 0),
        # the search's result came from an earlier run on the same files and settings (data/near_memo.py)
        "near_search_reused": dup.get("reused", False),
        "exact": [[rel(samples[i]) for i in g] for g in dup["exact"]],
        "near": [{"images": [rel(samples[i]) for i in g], "pixel_distance": d, "threshold": t}
                 for g, d, t in dup["near"]]}


def _group(splits: Splits, a) -> list[int]:
    """Step 2: leakage groups from exact/near duplicates, a CSV group column and a filename regex."""
    samples, n = splits.samples, len(splits.samples)
    uf = groups.UnionFind(n)
    dup = (near_memo.duplicate_groups(splits.infos, a.near_duplicate_distance, uf, a.near_duplicate_pixel_distance,
                                      a.small_image_size, _memo_folder(a)) if a.dedupe and a.data_check
           else {"exact": [], "near": [], "pairs": {}, "rule": None, "candidates": 0, "rejected": 0})
    by_key: dict[str, int] = {}
    patient: dict[int, str] = {}  # image -> its patient id (group column or group_regex)
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
            patient[i] = key
    roots = uf.groups()
    members = groups.members(roots)
    rel = splits.relpath
    splits.groups = _group_ids(splits, members, patient)
    splits.report["duplicates"] = _duplicates_report(splits, a, dup)
    sha, first = splits.shas, {}
    rep = [i if h is None else first.setdefault(h, i) for i, h in enumerate(splits.shas)]  # exact copy -> first

    def pair_distance(i: int, j: int):  # what confirmed two images as copies: 0 (same pixels), a distance, or none
        if sha[i] is not None and sha[i] == sha[j]:
            return 0.0
        i, j = sorted((rep[i], rep[j]))
        return dup["pairs"].get((i, j))

    spanning = [m for m in members.values() if len({samples[i].label for i in m}) > 1]
    largest = max(members.values(), key=len)
    usable = sum(1 for x in splits.assignment if x != EXCLUDED) or 1
    splits.report["leakage_groups"] = {
        "largest_group": {"id": splits.groups[largest[0]], "images": len(largest), "of": usable,
                          "share": round(len(largest) / usable, 4)},
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


def _group_ids(splits: Splits, members: dict, patient: dict[int, str]) -> list[str]:
    """Each image's leakage group as a reviewer can audit it in the manifest: its patient id(s) ('+'-joined when
    copies join two patients), 'copies of <first file>' for a group of duplicates without a patient, and the
    image's own path when it is alone."""
    out = [""] * len(splits.samples)
    for m in members.values():
        ids = sorted({patient[i] for i in m if i in patient})
        gid = "+".join(ids) if ids else (f"copies of {splits.relpath(splits.samples[m[0]])}" if len(m) > 1
                                         else splits.relpath(splits.samples[m[0]]))
        for i in m:
            out[i] = gid
    return out


def _check_group_share(splits: Splits, a) -> Optional[str]:
    """Why one leakage group is too large to split around (one line), or None: a group holding more than
    max_group_share of the images lands whole in one split and decides what the others can hold (issue 31:
    312 of 450 look-alike scans chained into one group, and validation and test were left with one class)."""
    g = splits.report["leakage_groups"]["largest_group"]
    if g["share"] <= a.max_group_share or g["images"] < 2:
        return None
    labels = {}
    for i in range(len(splits.samples)):
        if splits.groups[i] == g["id"] and splits.assignment[i] != EXCLUDED:
            labels[splits.samples[i].label] = labels.get(splits.samples[i].label, 0) + 1
    what = ", ".join(f"{c} {k}" for c, k in sorted(labels.items(), key=lambda x: -x[1]))
    return (f"one leakage group holds {g['images']} of the {g['of']} images "
            f"({100 * g['share']:.0f}%: {what}; group '{g['id']}'), more than max_group_share "
            f"{a.max_group_share:g}: it would decide the split by itself; check group_column / group_regex and the "
            "near-duplicate keys (near_duplicate_pixel_distance), or raise max_group_share")


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
    splits.report["class_counts"] = class_counts(splits)
    splits.report["excluded"] = splits.assignment.count(EXCLUDED)


def class_counts(splits: Splits) -> dict[str, dict[str, int]]:
    """split -> class (a finding, for multi-label data) -> images."""
    labels = label_set if splits.multi_label else (lambda s: [s.label])
    out = {split: {c: 0 for c in splits.classes} for split in SPLITS}
    for s, split in zip(splits.samples, splits.assignment):
        if split in out:
            for x in labels(s):
                out[split][x] = out[split].get(x, 0) + 1
    return out


def _check_usable(splits: Splits, a) -> Optional[str]:
    """Why the split cannot be trained and scored (one line), or None. A split that ends up empty, a training
    split without every class, or (single-label data) a validation or test split without every class is refused
    here, before any model is built: a test split of one class scores 100% with a zero-width interval whatever
    the model does. ``allow_missing_classes`` lets the last one through, named in data_report.json
    (absent_classes) and in a warning."""
    counts, per_class = splits.counts(), splits.report["class_counts"]
    have = {split: {c for c, k in per_class[split].items() if k} for split in SPLITS}
    hint = ("duplicate or patient grouping may have put whole classes in one split (see duplicates and "
            "leakage_groups)")
    for split in SPLITS:
        if counts[split] == 0:
            return f"the {split} split is empty after the data check; {hint}"
    missing = sorted(set(splits.classes) - have["train"])
    if missing:
        return f"the train split has no image of class(es) {missing}; {hint}"
    absent = {split: sorted(set(splits.classes) - have[split]) for split in ("validation", "test")}
    absent = {k: v for k, v in absent.items() if v}
    splits.report["absent_classes"] = absent
    if not absent:
        return None
    what = "; ".join(f"the {split} split ({counts[split]} images: "
                     + ", ".join(f"{c} {k}" for c, k in per_class[split].items() if k) + f") has no {', '.join(v)}"
                     for split, v in absent.items())
    if splits.multi_label:  # a finding absent from a split: its AUC there is undefined, the others still score
        logger.warning(f"{what}")
        return None
    if a.allow_missing_classes:
        logger.warning(f"NOT EVERY CLASS IS SCORED: {what} (allow_missing_classes true); its metrics cover only "
                       "the classes present")
        return None
    return (f"{what}; its accuracy would not measure those classes; {hint}, or add images of them; set "
            "allow_missing_classes true to train anyway")
