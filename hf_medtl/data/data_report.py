"""data_report.json and the one console line that sums up the data check."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from hf_medtl.data.groups import members as group_members
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
    patients = r.get("leakage_groups", {}).get("patient_groups")
    if patients:
        parts.append(f"{patients} patient groups kept within one split")
    parts.append(f"{d['exact_groups']} exact and {d['near_groups']} near duplicate groups kept within one split")
    largest = r.get("leakage_groups", {}).get("largest_group")
    if largest and largest["images"] > 1:
        parts.append(f"largest group {largest['images']} images ({100 * largest['share']:.1f}%)")
    if d.get("near_candidates"):
        parts.append(f"{d['near_candidates_rejected']} of {d['near_candidates']} near-duplicate candidates rejected "
                     "on the pixels")
    if r["cross_split_duplicates"]["found"]:
        c = r["cross_split_duplicates"]
        why = ", ".join(f"{n} {reason}" for reason, n in _crossing_reasons(splits).items() if n)
        parts.append(f"{c['found']} train copies of held-out images {'removed' if c['action'] == 'remove' else 'kept'} "
                     f"({why})")
    return "data: " + "; ".join(parts)


def _crossing_reasons(splits) -> dict:
    """Why each train image that straddles a fixed split does: the same pixels as a held-out image of its group,
    or a near duplicate confirmed on the pixels (or, with patient groups, the same patient)."""
    crossing = set(splits.report["cross_split_duplicates"]["images"])
    patients = splits.report["leakage_groups"]["group_regex"] or any(s.group is not None for s in splits.samples)
    members = group_members(splits.groups)
    reasons = {"pixel-identical": 0, "near duplicates or same patient" if patients else "near duplicates": 0}
    near = list(reasons)[1]
    for i, s in enumerate(splits.samples):
        if splits.relpath(s) not in crossing:
            continue
        same = any(j != i and splits.shas[j] == splits.shas[i] and splits.relpath(splits.samples[j]) not in crossing
                   for j in members[splits.groups[i]])
        reasons["pixel-identical" if same and splits.shas[i] is not None else near] += 1
    return reasons


def class_table(splits) -> str:
    """Images per split and class, one line per split (check-data prints it)."""
    counts = splits.report.get("class_counts") or {}
    width = max([len(c) for c in splits.classes] + [5])
    lines = [f"{'class':<{width}} | " + " | ".join(f"{s:>10}" for s in counts)]
    for c in splits.classes:
        lines.append(f"{c:<{width}} | " + " | ".join(f"{counts[s].get(c, 0):>10}" for s in counts))
    return "\n".join(lines)
