"""The data stage: the recipe's data arguments in; checked, leakage-guarded train/validation/test splits out."""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hf_medtl.data import check
from hf_medtl.data.decode import decode
from hf_medtl.data.sources import (DataError, Sample, read_label_csv, read_medmnist_npz, scan_class_folders)
from hf_medtl.data.split import SPLITS, grouped_stratified_assign, stratified_assign
from hf_medtl.data.transforms import Preprocessing, build_transforms, preprocessing_from_processor

__all__ = ["DataError", "Splits", "load_splits", "to_datasets", "image_dataset", "Preprocessing",
           "preprocessing_from_processor", "build_transforms"]

EXCLUDED = "excluded"
PROTECTION = {"test": 2, "validation": 1, "train": 0}  # a duplicate keeps the copy in the most protected split


@dataclass
class Splits:
    """Which file goes to which split, decided before any model is built."""

    root: Path
    samples: list[Sample]
    assignment: list[str]  # a split name, or "excluded"
    classes: list[str]
    ignored: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a sample is excluded ("" otherwise)
    groups: list[str] = field(default_factory=list)  # leakage group of each sample
    shas: list[Optional[str]] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def files(self, split: str) -> list[Sample]:
        return [s for s, a in zip(self.samples, self.assignment) if a == split]

    def counts(self) -> dict[str, int]:
        return {split: self.assignment.count(split) for split in SPLITS}

    def relpath(self, s: Sample) -> str:
        return str(s.path) if s.array is not None else os.path.relpath(s.path, self.root)

    def write_manifest(self, path: Path) -> None:
        tmp = Path(f"{path}.tmp")  # other ranks may be reading the previous one
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "group", "sha1", "note"])
            for i, s in enumerate(self.samples):
                w.writerow([self.relpath(s), s.label, self.assignment[i], self.groups[i] if self.groups else "",
                            (self.shas[i] or "") if self.shas else "", self.notes[i] if self.notes else ""])
        os.replace(tmp, path)


def _scan(a) -> tuple[Path, list[Sample], list[Optional[str]], dict[str, float], list[Path], list[str]]:
    """(root, samples, split fixed by the source or None, ratios for the free ones, ignored files, classes)."""
    if a.npz_file:
        parts = read_medmnist_npz(a.npz_file, a.class_names)
        samples = [s for items in parts.values() for s in items]
        fixed = [split for split, items in parts.items() for _ in items]
        ratios = {} if "test" in parts else {"test": a.test_ratio}
        if ratios:
            fixed = [None if f == "train" else f for f in fixed]
        classes = a.class_names or sorted({s.label for s in samples}, key=int)
        return Path(a.npz_file).resolve().parent, samples, fixed, ratios, [], list(classes)
    if a.data_dir or a.csv_file:
        scan = scan_class_folders(a.data_dir, a.file_pattern, "data_dir") if a.data_dir else read_label_csv(a.csv_file)
        return (scan.root, scan.samples, [None] * len(scan.samples), {"validation": a.val_ratio, "test": a.test_ratio},
                scan.ignored, scan.classes)
    train = scan_class_folders(a.train_dir, a.file_pattern, "train_dir")
    test = scan_class_folders(a.test_dir, a.file_pattern, "test_dir")
    if not set(test.classes) <= set(train.classes):
        raise DataError(f"test_dir classes {test.classes} are not all among train_dir classes {train.classes}; "
                        "the two folders need the same class sub-folders")
    root = Path(os.path.commonpath([train.root.resolve(), test.root.resolve()]))
    return (root, train.samples + test.samples, [None] * len(train.samples) + ["test"] * len(test.samples),
            {"validation": a.val_ratio}, train.ignored + test.ignored, train.classes)


def _previous_manifest(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return {(r["path"], r["label"]): r for r in csv.DictReader(f)}


def load_splits(a, seed: int, report_dir: Optional[Path] = None, write: bool = True) -> Splits:
    """Scan, check every image, group duplicates and patients, and assign splits (or reuse the manifest
    in report_dir when the data has not changed). Writes report_dir/data_report.json when ``write``."""
    seed = seed if a.split_seed is None else a.split_seed
    root, samples, fixed, ratios, ignored, classes = _scan(a)
    n = len(samples)
    splits = Splits(root, samples, ["train"] * n, classes, ignored, [""] * n, [""] * n, [None] * n)
    report = splits.report
    settings = {k: getattr(a, k) for k in ("val_ratio", "test_ratio", "dedupe", "near_duplicate_distance",
                                           "group_regex", "cross_split_duplicates", "on_bad_image", "data_check")}
    report.update(files=n, ignored_non_image_files=[str(p) for p in ignored], split_settings={**settings, "seed": seed})

    # 1. Decode everything once.
    infos = check.inspect_all([s.source for s in samples]) if a.data_check else [check.ImageInfo() for _ in samples]
    splits.shas = [info.sha for info in infos]
    bad = [i for i, info in enumerate(infos) if not info.ok]
    report["bad_images"] = [{"path": splits.relpath(samples[i]), "reason": infos[i].reason} for i in bad]
    report["on_bad_image"] = a.on_bad_image
    for i in bad:
        splits.assignment[i], splits.notes[i] = EXCLUDED, f"unreadable: {infos[i].reason}"

    # 2. Leakage groups: exact/near duplicates, a CSV group column, a filename regex.
    uf = check.UnionFind(n)
    dup = (check.duplicate_groups(infos, a.near_duplicate_distance, uf) if a.dedupe and a.data_check
           else {"exact": [], "near": []})
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
    members: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        members.setdefault(r, []).append(i)
    report["duplicates"] = {
        "exact_groups": len(dup["exact"]), "images_in_exact_groups": sum(map(len, dup["exact"])),
        "near_distance": a.near_duplicate_distance if a.dedupe else None, "near_groups": len(dup["near"]),
        "images_in_near_groups": sum(map(len, dup["near"])),
        "exact": [[splits.relpath(samples[i]) for i in g] for g in dup["exact"]],
        "near": [[splits.relpath(samples[i]) for i in g] for g in dup["near"]]}
    report["leakage_groups"] = {"groups_of_2_or_more": sum(len(m) > 1 for m in members.values()),
                                "images_in_them": sum(len(m) for m in members.values() if len(m) > 1),
                                "group_regex": a.group_regex}

    # 3. Copies that straddle a split the source fixed (an official test folder, MedMNIST's val).
    crossing = []
    for idx in members.values():
        fixed_here = {fixed[i] for i in idx if fixed[i] is not None}
        if not fixed_here or (len(fixed_here) == 1 and all(fixed[i] is not None for i in idx)):
            continue
        keep = max(fixed_here, key=PROTECTION.get)
        for i in idx:
            if fixed[i] != keep and splits.assignment[i] != EXCLUDED:
                crossing.append(i)
                if a.cross_split_duplicates == "remove":
                    splits.assignment[i], splits.notes[i] = EXCLUDED, f"duplicate of a {keep} image"
    report["cross_split_duplicates"] = {"found": len(crossing), "action": a.cross_split_duplicates,
                                        "images": [splits.relpath(samples[i]) for i in crossing]}

    if bad and a.on_bad_image == "error":
        _write_report(report_dir, report, write)
        raise DataError(f"{len(bad)} unreadable image(s), e.g. '{report['bad_images'][0]['path']}' "
                        f"({report['bad_images'][0]['reason']}); all are listed in {report_dir or '.'}/data_report.json. "
                        "Remove or fix them, or set on_bad_image 'skip'")

    # 4. Assign the free samples, reusing a previous manifest when nothing changed.
    usable = [i for i in range(n) if splits.assignment[i] != EXCLUDED]
    for i in usable:
        if fixed[i] is not None:
            splits.assignment[i] = fixed[i]
    free = [i for i in usable if fixed[i] is None]
    reused = _reuse(splits, free, report_dir, report) if report_dir else False
    if not reused and ratios:
        labels = [samples[i].label for i in free]
        if any(len(members[roots[i]]) > 1 for i in free):
            assign = grouped_stratified_assign(labels, [roots[i] for i in free], ratios, seed)
        else:
            assign = stratified_assign(labels, ratios, seed)
        for i, split in zip(free, assign):
            splits.assignment[i] = split
    for split in SPLITS:
        have = {samples[i].label for i in usable if splits.assignment[i] == split}
        if split != "train" and have and have != set(classes):
            print(f"[hf_medtl] note: the {split} split has no image of {sorted(set(classes) - have)}", file=sys.stderr)
    report["split_counts"] = splits.counts()
    report["excluded"] = splits.assignment.count(EXCLUDED)
    _write_report(report_dir, report, write)
    return splits


def _reuse(splits: Splits, free: list[int], report_dir: Path, report: dict) -> bool:
    previous = _previous_manifest(Path(report_dir) / "split_manifest.csv")
    if previous is None:
        report["manifest"] = "new"
        return False
    try:
        before = json.loads((Path(report_dir) / "data_report.json").read_text()).get("split_settings")
    except (OSError, ValueError):
        before = None
    if before != report["split_settings"]:
        report["manifest"] = "split settings changed; new split"
        print(f"[hf_medtl] the split settings differ from those of {report_dir}/split_manifest.csv; making a new split",
              file=sys.stderr)
        return False
    now = {(splits.relpath(splits.samples[i]), splits.samples[i].label): i for i in range(len(splits.samples))}
    added = [k for k in now if k not in previous]
    removed = [k for k in previous if k not in now]
    changed = [k for k, i in now.items() if k in previous and splits.shas[i] and previous[k]["sha1"]
               and previous[k]["sha1"] != splits.shas[i]]
    if added or removed or changed:
        report["manifest"] = {"status": "dataset changed; new split", "added": len(added), "removed": len(removed),
                              "changed": len(changed)}
        print(f"[hf_medtl] the dataset changed since {report_dir}/split_manifest.csv ({len(added)} added, "
              f"{len(removed)} removed, {len(changed)} changed); making a new split", file=sys.stderr)
        return False
    for i in free:
        split = previous[(splits.relpath(splits.samples[i]), splits.samples[i].label)]["split"]
        splits.assignment[i] = split if split in SPLITS else splits.assignment[i]
    report["manifest"] = "reused"
    print(f"[hf_medtl] reusing the split in {report_dir}/split_manifest.csv", file=sys.stderr)
    return True


def _write_report(report_dir: Optional[Path], report: dict, write: bool) -> None:
    if report_dir is not None and write:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(report_dir) / "data_report.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, Path(report_dir) / "data_report.json")


def summary_line(splits: Splits) -> str:
    r = splits.report
    d, bad = r["duplicates"], len(r["bad_images"])
    parts = [f"{r['files']} images", ", ".join(f"{k} {v}" for k, v in r["split_counts"].items())]
    if bad:
        parts.append(f"{bad} unreadable skipped")
    if r["ignored_non_image_files"]:
        parts.append(f"{len(r['ignored_non_image_files'])} non-image files ignored")
    parts.append(f"{d['exact_groups']} exact and {d['near_groups']} near duplicate groups kept within one split")
    if r["cross_split_duplicates"]["found"]:
        c = r["cross_split_duplicates"]
        parts.append(f"{c['found']} train copies of held-out images {'removed' if c['action'] == 'remove' else 'kept'}")
    return "[hf_medtl] data: " + "; ".join(parts)


def image_dataset(samples: list[Sample], classes: list[str], transform):
    """A ``datasets.Dataset`` of (pixel_values, labels), decoded (hf_medtl.data.decode) and transformed lazily."""
    import datasets

    label_id = {c: i for i, c in enumerate(classes)}
    ds = datasets.Dataset.from_dict({"index": list(range(len(samples))), "label": [label_id[s.label] for s in samples]})
    ds.set_transform(lambda batch: {"pixel_values": [transform(decode(samples[i].source)) for i in batch["index"]],
                                    "labels": batch["label"]})
    return ds


def to_datasets(splits: Splits, prep: Preprocessing, data_args) -> dict:
    """A dataset per split, plus ``train_eval``: the training images without augmentation."""
    train_tf, eval_tf = build_transforms(prep, data_args.augment, data_args.crop_scale_min,
                                         data_args.rotation_degrees, data_args.hflip_prob)
    train = splits.files("train")
    return {"train": image_dataset(train, splits.classes, train_tf),
            "train_eval": image_dataset(train, splits.classes, eval_tf),
            "validation": image_dataset(splits.files("validation"), splits.classes, eval_tf),
            "test": image_dataset(splits.files("test"), splits.classes, eval_tf)}
