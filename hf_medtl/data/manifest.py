"""The split manifest: which file went to which split and why, written down before any model is built, and
reused by a rerun into the same output_dir when the files, their pixels and the split settings are unchanged."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hf_medtl.data.types import Sample
from hf_medtl.data.split import SPLITS
from hf_medtl.outputs import atomic_write_text

logger = logging.getLogger("hf_medtl")

EXCLUDED = "excluded"
MANIFEST = "split_manifest.csv"
DATA_REPORT = "data_report.json"


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
    infos: list = field(default_factory=list, repr=False)  # check.ImageInfo per sample, from the data check
    multi_label: bool = False  # labels are '|'-joined finding sets (hf_medtl.data.multilabel)

    def files(self, split: str) -> list[Sample]:
        return [s for s, a in zip(self.samples, self.assignment) if a == split]

    def counts(self) -> dict[str, int]:
        return {split: self.assignment.count(split) for split in SPLITS}

    def relpath(self, s: Sample) -> str:
        # in-memory images: an .npz entry ('file::split_images/i') as it is; a NIfTI slice by its file, as any file
        return str(s.path) if s.array is not None and "::" in str(s.path) else os.path.relpath(s.path, self.root)

    def write_manifest(self, path: Path) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "label", "split", "group", "sha1", "note"])
        for i, s in enumerate(self.samples):
            w.writerow([self.relpath(s), s.label, self.assignment[i], self.groups[i] if self.groups else "",
                        (self.shas[i] or "") if self.shas else "", self.notes[i] if self.notes else ""])
        atomic_write_text(path, buf.getvalue())  # other ranks may be reading the previous one


def read_manifest(run_dir: Path) -> Optional[dict]:
    """The rows of a run's split_manifest.csv by (path, label), or None when it has none."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return {(r["path"], r["label"]): r for r in csv.DictReader(f)}


def _previous(report_dir: Path) -> tuple[Optional[dict], Optional[dict]]:
    """(rows of the previous manifest by (path, label), its split settings), or Nones."""
    rows = read_manifest(report_dir)
    if rows is None:
        return None, None
    try:
        settings = json.loads((Path(report_dir) / DATA_REPORT).read_text()).get("split_settings")
    except (OSError, ValueError):
        settings = None
    return rows, settings


def reuse(splits: Splits, free: list[int], report_dir: Path, report: dict) -> bool:
    """Assign ``free`` samples as the previous manifest did, if nothing changed; say what changed otherwise."""
    previous, before = _previous(report_dir)
    if previous is None:
        report["manifest"] = "new"
        return False
    if before != report["split_settings"]:
        report["manifest"] = "split settings changed; new split"
        logger.warning(f"the split settings differ from those of {report_dir}/{MANIFEST}; making a new split")
        return False
    now = {(splits.relpath(splits.samples[i]), splits.samples[i].label): i for i in range(len(splits.samples))}
    added = [k for k in now if k not in previous]
    removed = [k for k in previous if k not in now]
    changed = [k for k, i in now.items() if k in previous and splits.shas[i] and previous[k]["sha1"]
               and previous[k]["sha1"] != splits.shas[i]]
    if added or removed or changed:
        report["manifest"] = {"status": "dataset changed; new split", "added": len(added), "removed": len(removed),
                              "changed": len(changed)}
        logger.warning(f"the dataset changed since {report_dir}/{MANIFEST} ({len(added)} added, {len(removed)} "
                       f"removed, {len(changed)} changed); making a new split")
        return False
    for i in free:
        split = previous[(splits.relpath(splits.samples[i]), splits.samples[i].label)]["split"]
        splits.assignment[i] = split if split in SPLITS else splits.assignment[i]
    report["manifest"] = "reused"
    logger.info(f"reusing the split in {report_dir}/{MANIFEST}")
    return True
