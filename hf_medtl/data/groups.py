"""Leakage groups: images that must land in one split (copies of one image, one patient's images)."""
from __future__ import annotations

from typing import Callable, Hashable, Iterable


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
