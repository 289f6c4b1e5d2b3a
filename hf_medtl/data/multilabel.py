"""Multi-label data (seed 001's ChestX-ray14 setting): several findings per image, or none.

Two CSV forms (``multilabel_csv``):
- ``path`` (relative to the CSV's folder), one 0/1 column per finding, optionally ``group`` (a patient id);
- ChestX-ray14's ``Data_Entry_2017.csv``: ``Image Index`` (a file in ``images/`` beside the CSV, or beside it),
  ``Finding Labels`` (names separated by '|'; the literal "No Finding" is the empty set) and ``Patient ID`` (the
  leakage group).
A sample's label is its findings joined by '|' in class order ("" for none), so the manifest and the split
reuse work unchanged; splits are stratified per label (every label in every split where it has enough images).
Every cell is checked: a missing or empty label cell, a duplicated column, a finding name holding '|' or a row
longer than the header is refused in one line naming the file and line, never guessed at.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from hf_medtl.data.groups import group_id
from hf_medtl.data.types import DataError, Sample, Source, inside

NO_FINDING = "No Finding"
SEP = "|"
IMAGE, FINDINGS, PATIENT = "Image Index", "Finding Labels", "Patient ID"


def label_set(sample: Sample) -> list[str]:
    return [x for x in sample.label.split(SEP) if x]


def _table(csv_file: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(column names, [(line number, cells)]), read with csv.reader: csv.DictReader would keep only the last of
    two columns of one name, silently."""
    if not csv_file.is_file():
        raise DataError(f"multilabel_csv '{csv_file}': file not found")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            rows = [(reader.line_num, cells) for cells in reader if cells]  # (blank lines carry nothing)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"multilabel_csv '{csv_file}': not a readable UTF-8 CSV ({type(e).__name__})") from None
    named = [c for c in header if c]
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise DataError(f"multilabel_csv '{csv_file}': column(s) {twice} appear more than once; rename or remove "
                        "the copies (which one holds the labels is not for the reader to guess)")
    return header, rows


class _Rows:
    """The cells of one CSV by column name, each access checked: a cell the row lacks is one line naming the file
    and line, not a KeyError or a None read as 'no finding'."""

    def __init__(self, csv_file: Path, header: list[str]):
        self.csv_file, self.header, self.index = csv_file, header, {c: i for i, c in enumerate(header) if c}

    def where(self, line: int) -> str:
        return f"multilabel_csv '{self.csv_file}', line {line}"

    def check(self, line: int, cells: list[str]) -> None:
        # A row longer than the header has shifted cells: the labels read would be another column's.
        if any(c.strip() for c in cells[len(self.header):]):
            raise DataError(f"{self.where(line)}: {len(cells)} cells, but the header names {len(self.header)} "
                            "columns; quote cells that hold commas")

    def cell(self, line: int, cells: list[str], name: str, required: bool = True) -> str:
        i = self.index[name]
        if i >= len(cells):
            raise DataError(f"{self.where(line)}: no '{name}' cell (the row has {len(cells)} of the header's "
                            f"{len(self.header)} columns)")
        value = cells[i].strip()
        if required and not value:
            raise DataError(f"{self.where(line)}: the '{name}' cell is empty")
        return value


def _chestxray_findings(where: str, text: str) -> list[str]:
    """The findings of one 'Finding Labels' cell; only the literal 'No Finding' is the empty set."""
    if not text:
        raise DataError(f"{where}: the '{FINDINGS}' cell is empty; write '{NO_FINDING}' for an image without "
                        "findings")
    names = [x.strip() for x in text.split(SEP)]
    if not all(names):
        raise DataError(f"{where}: '{FINDINGS}' {text!r} has an empty finding between '|' separators")
    if NO_FINDING in names and len(names) > 1:
        raise DataError(f"{where}: '{FINDINGS}' {text!r} lists findings together with '{NO_FINDING}'")
    return [x for x in names if x != NO_FINDING]


def _group(t: _Rows, line: int, cells: list[str], column: str) -> Optional[str]:
    """A row's patient id as every reader names it (hf_medtl.data.groups.group_id: 7 == 7.0); an empty cell is an
    ungrouped image here (ChestX-ray14's form)."""
    if column not in t.index:
        return None
    value = t.cell(line, cells, column, required=False)
    return group_id(value, t.where(line), column) if value else None


def _read_chestxray(csv_file: Path, header: list[str], rows):
    """(paths, finding lists, groups, classes) of ChestX-ray14's Data_Entry form."""
    t = _Rows(csv_file, header)
    images = csv_file.parent / "images" if (csv_file.parent / "images").is_dir() else csv_file.parent
    paths, findings, groups = [], [], []
    for line, cells in rows:
        t.check(line, cells)
        paths.append(images / t.cell(line, cells, IMAGE))
        findings.append(_chestxray_findings(t.where(line), t.cell(line, cells, FINDINGS, required=False)))
        # An empty Patient ID cell is an ungrouped image; a row too short to hold one is refused by cell().
        groups.append(_group(t, line, cells, PATIENT))
    return paths, findings, groups, sorted({x for f in findings for x in f})


def _read_columns(csv_file: Path, header: list[str], rows):
    """(paths, finding lists, groups, classes) of the path + one 0/1 column per finding form."""
    if "path" not in header:
        raise DataError(f"multilabel_csv '{csv_file}': needs a 'path' column and one 0/1 column per finding, "
                        f"or ChestX-ray14's '{IMAGE}' and '{FINDINGS}'")
    # An unnamed column is a trailing comma when it is empty throughout; holding values, it is an unnamed finding.
    unnamed = [i for i, c in enumerate(header) if not c and any(i < len(r) and r[i].strip() for _, r in rows)]
    if unnamed:
        raise DataError(f"multilabel_csv '{csv_file}': column {unnamed[0] + 1} has no name but holds values; every "
                        "column but path and group is a finding, so name it or remove it")
    joined = [c for c in header if SEP in c]
    if joined:
        raise DataError(f"multilabel_csv '{csv_file}': finding '{joined[0]}' holds '{SEP}', the separator of "
                        "finding sets; rename it")
    t, classes = _Rows(csv_file, header), [c for c in header if c and c not in ("path", "group")]
    paths, findings, groups = [], [], []
    for line, cells in rows:
        t.check(line, cells)
        values = {c: t.cell(line, cells, c, required=False) for c in classes}
        bad = [c for c in classes if values[c] not in ("0", "1")]
        if bad:
            raise DataError(f"{t.where(line)}: column '{bad[0]}' must be 0 or 1, got {values[bad[0]]!r}")
        findings.append([c for c in classes if values[c] == "1"])
        paths.append(csv_file.parent / t.cell(line, cells, "path"))
        groups.append(_group(t, line, cells, "group"))
    return paths, findings, groups, classes


def read_multilabel_csv(csv_file: str | Path, allow_outside: bool = False) -> tuple[list[Sample], list[str]]:
    """(samples whose label is 'A|B' or '', finding names) from either CSV form; every row checked. The finding
    names are the 0/1 form's columns, or the findings ChestX-ray's form names in at least one row."""
    csv_file = Path(csv_file)
    header, rows = _table(csv_file)
    chestxray = {IMAGE, FINDINGS} <= set(header)
    paths, findings, groups, classes = (_read_chestxray if chestxray else _read_columns)(csv_file, header, rows)
    if len(classes) < 2:
        raise DataError(f"multilabel_csv '{csv_file}': fewer than two findings; multi-label needs two or more")
    samples = []
    for (line, _), path, f, g in zip(rows, paths, findings, groups):
        inside(path, csv_file.parent, allow_outside, f"multilabel_csv '{csv_file}', line {line}")
        if not path.is_file():
            raise DataError(f"multilabel_csv '{csv_file}', line {line}: image '{path.name}' does not exist")
        samples.append(Sample(path, SEP.join(c for c in classes if c in f), group=g))
    return samples, classes


def scan_multilabel(a) -> Source:
    samples, classes = read_multilabel_csv(a.multilabel_csv, a.allow_paths_outside_root)
    return Source(Path(a.multilabel_csv).parent, samples, [None] * len(samples),
                  {"validation": a.val_ratio, "test": a.test_ratio}, [], classes, multi_label=True)
