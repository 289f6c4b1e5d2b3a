"""data_report.json and the one console line that sums up the data check."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from hf_medtl.data.manifest import DATA_REPORT
from hf_medtl.outputs import atomic_write_text


def write(report_dir: Optional[Path], report: dict) -> None:
    if report_dir is not None:
        atomic_write_text(Path(report_dir) / DATA_REPORT, json.dumps(report, indent=2) + "\n")


def summary_line(splits) -> str:
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
    return "data: " + "; ".join(parts)
