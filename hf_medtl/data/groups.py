"""Leakage groups: images that must land in one split (copies of one image, one patient's images)."""
from __future__ import annotations

from typing import Hashable, Iterable


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
