"""Patient columns found by name or by their values: a column that looks like a patient id but is not the group
column stops the run (one patient's images could land in both training and test). A leaf of the data package, so
that every reader (CSV, Hugging Face dataset) uses one rule."""
from __future__ import annotations

import re
from typing import Optional

from hf_medtl.data.types import DataError

# Column names that say "patient" (or subject, study, case): left unused, their images could sit on both sides of
# the split, so a CSV that holds one must say which column groups the images (or that none does).
PATIENT_LIKE = re.compile(r"^(patient|subject|study|case|participant|pid$|mrn$)", re.I)
# Names of an id (ID, ptid, subj_no, record_number...): an integer column so named is an identifier, not a count.
ID_NAME = re.compile(r"id$|(^|_)(no|nr|num|number|code|key)$", re.I)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def identifier_evidence(name: str, values: list) -> Optional[str]:
    """Why a column's values look like a patient (or study) id, or None: most rows share their value with other
    rows (several images per value), there are many values (at least the square root of the row count: not a
    category such as sex, view or site), and they are not measurements (numbers with decimals, or integers
    such as an age, unless the column is named like an id or the integers are zero-padded codes)."""
    vals = [str(v).strip() for v in values if v is not None and str(v).strip()]
    n = len(vals)
    if n < 6 or n < 0.9 * len(values):
        return None
    counts: dict[str, int] = {}
    for v in vals:
        counts[v] = counts.get(v, 0) + 1
    k, shared = len(counts), sum(c for c in counts.values() if c > 1)
    if shared < 0.5 * n or k < max(3, n ** 0.5):  # mostly one row per value (an image id), or a category
        return None
    if all(_NUMBER.match(v) for v in counts):
        integers = all(re.fullmatch(r"[+-]?\d+", v) for v in counts)
        padded = any(len(v) > 1 and v.startswith("0") for v in counts)
        if not integers or not (ID_NAME.search(name.strip()) or padded):
            return None
    rows = sorted(counts.values())
    return f"{k} values, {rows[len(rows) // 2]} rows each (median), {shared} of {n} rows share theirs"


def unused_patient_column(names: list[str], used: tuple, values_of) -> Optional[tuple[str, str]]:
    """(column, why) for the first column other than ``used`` that looks like a patient id, by its name
    (PATIENT_LIKE) or by its values (identifier_evidence; ``values_of(column)`` -> the column's values, or None
    for a column that holds no scalars); None when there is none."""
    rest = [c for c in names if c not in used]
    for c in rest:
        if PATIENT_LIKE.match(c.strip()):
            return c, "its name"
    for c in rest:
        values = values_of(c)
        why = identifier_evidence(c, values) if values is not None else None
        if why:
            return c, f"its values: {why}"
    return None


def patient_column_error(where: str, column: str, why: str, key: str = "group_column") -> DataError:
    """``key``: how the user names the group column where this is raised (the recipe key, or a command's flag)."""
    return DataError(f"{where}: column '{column}' looks like a patient id ({why}) but is not used, so one patient's "
                     f"images could land in both training and test; set {key} '{column}' (its images stay "
                     f"in one split), or {key} null if it is not one")
