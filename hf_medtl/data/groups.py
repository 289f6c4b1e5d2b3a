"""Leakage groups: images that must land in one split (copies of one image, one patient's images)."""
from __future__ import annotations

import math
import re
from decimal import Decimal
from numbers import Integral, Real
from typing import Callable, Hashable, Iterable

from hf_medtl.data.types import DataError

# A plain decimal number as text ("7", "007", "7.0", "7.50"); no exponent: an id such as "12e45" stays text.
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?")
# Cells that hold no id: what pandas, R and spreadsheets write for a missing value.
_MISSING = {"", "nan", "na", "n/a", "none", "null", "<na>", "nat", "-"}


def group_id(value, where: str, column: str, key: str = "group_column") -> str:
    """A patient (group) id as one text whatever type the reader hands over, so that two readers, or two splits of
    one dataset, name one patient alike: numbers normalised (7, 7.0, "7", "7.0" and "007" are the patient "7": a
    split re-exported through pandas turns ints into floats and drops zero padding, and merging two ids is only a
    more cautious split, while keeping them apart leaks one patient into train and test), text stripped. A missing
    id (None, NaN, an empty cell, "nan", "NA"...) is refused in one line naming the column and ``where`` (the
    row; ``key``: how the user names the group column there, the recipe key or a command's flag): left in, every
    such image would become one patient "nan" spanning classes and splits."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, Integral):
        return str(int(value))
    elif isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):
            raise _missing(where, column, value, key)
        return str(int(number)) if number.is_integer() else _decimal_text(Decimal(repr(number)))
    else:
        text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")).strip()
    if text.lower() in _MISSING:
        raise _missing(where, column, value, key)
    return _decimal_text(Decimal(text)) if _DECIMAL.fullmatch(text) else text


def _decimal_text(d: Decimal) -> str:
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


def _missing(where: str, column: str, value, key: str) -> DataError:
    shown = "empty" if value is None or not str(value).strip() else repr(value) if isinstance(value, str) else value
    return DataError(f"{where}: no patient id in group column '{column}' ({shown}); fill it in, remove the row, "
                     f"or set {key} null if the data has no patients")


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


def members(keys: Iterable[Hashable]) -> dict:
    """key -> the indices that carry it, in order of first appearance (the one group-members map)."""
    out: dict = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def multi(keys: Iterable[Hashable]) -> list[list[int]]:
    """The groups of two or more."""
    return [m for m in members(keys).values() if len(m) > 1]


def complete_linkage(n: int, edges: Iterable[tuple[int, int]],
                     all_confirmed: Callable[[list[tuple[int, int]]], bool]) -> tuple[list[list[int]], int]:
    """Groups of 0..n-1 in which every two members are confirmed, grown along ``edges`` (confirmed pairs, closest
    first): two groups merge only when every pair across them is confirmed too (``all_confirmed`` of (i, j) with
    i < j). Union-find over the edges alone is transitive: on one modality's look-alikes, A~B, B~C, C~D... chains
    a whole dataset into one group (issue 31). Returns the groups of two or more and the number of edges left
    between two groups (images that are close to a group's member but not to all of them)."""
    of = list(range(n))
    group: dict[int, list[int]] = {i: [i] for i in range(n)}
    edges = list(edges)
    for i, j in edges:
        a, b = of[i], of[j]
        if a == b:
            continue
        cross = [(min(x, y), max(x, y)) for x in group[a] for y in group[b]]
        if len(cross) > 1 and not all_confirmed(cross):
            continue
        keep, gone = min(a, b), max(a, b)
        for x in group[gone]:
            of[x] = keep
        group[keep] = sorted(group[keep] + group.pop(gone))
    apart = sum(of[i] != of[j] for i, j in edges)
    return [m for _, m in sorted(group.items()) if len(m) > 1], apart
