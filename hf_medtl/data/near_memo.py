"""A rerun on the same files reuses the near-duplicate search instead of repeating it: the result (groups, the
confirmed pairs and their distances, the counts) is stored under a key made of every image's pixel hash and size,
in order, the duplicate settings and the code that decides (data/check.py, data/near.py, data/groups.py), in the
image cache's folder. Seeds, folds and cv jobs on one dataset therefore pay for the search once. A changed file,
setting or rule gives another key; an entry that cannot be read is ignored and written again, never trusted.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Optional

logger = logging.getLogger("hf_medtl")
FOLDER = "near_duplicates"


@lru_cache(maxsize=1)
def _rules() -> str:
    """The code the result depends on: any edit to it is a new key."""
    from hf_medtl.data import check, groups, near

    return hashlib.sha256("".join(inspect.getsource(m) for m in (check, groups, near)).encode()).hexdigest()


def key(infos: list, near_distance: int, pixel_distance: Optional[float], small_image_size: int) -> str:
    h = hashlib.sha256(json.dumps([_rules(), near_distance, pixel_distance, small_image_size]).encode())
    for info in infos:
        h.update(f"{info.sha}:{info.size}\n".encode())
    return h.hexdigest()


def _encode(out: dict) -> str:
    pairs = [[i, j, d] for (i, j), d in out["pairs"].items()]
    return json.dumps({**out, "pairs": pairs}, default=float)  # (numpy floats)


def _decode(text: str, n: int) -> dict:
    out = json.loads(text)
    out["pairs"] = {(int(i), int(j)): float(d) for i, j, d in out["pairs"]}
    out["near"] = [([int(i) for i in m], float(d), float(t)) for m, d, t in out["near"]]
    out["exact"] = [[int(i) for i in g] for g in out["exact"]]
    if any(not 0 <= i < n for g in out["exact"] for i in g) or any(not 0 <= i < n for m, _, _ in out["near"] for i in m):
        raise ValueError("an index outside the data")
    return out


def duplicate_groups(infos: list, near_distance: int, uf, pixel_distance: Optional[float], small_image_size: int,
                     folder: Optional[Path]) -> dict:
    """hf_medtl.data.check.duplicate_groups, its result reused from ``folder`` when these files were searched with
    these settings before (``folder`` None: always searched). ``uf`` receives the same unions either way."""
    from hf_medtl.data import check
    from hf_medtl.outputs import atomic_write_text

    path = Path(folder) / FOLDER / f"{key(infos, near_distance, pixel_distance, small_image_size)}.json" \
        if folder is not None else None
    if path is not None and path.is_file():
        try:
            out = _decode(path.read_text(), len(infos))
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning(f"{path}: unreadable ({type(e).__name__}); searching for near duplicates again")
        else:
            for g in out["exact"] + [m for m, _, _ in out["near"]]:
                for i in g[1:]:
                    uf.union(i, g[0])
            out["reused"] = True
            return out
    out = check.duplicate_groups(infos, near_distance, uf, pixel_distance, small_image_size)
    if path is not None:
        try:
            atomic_write_text(path, _encode(out))
        except OSError as e:  # a read-only or full cache folder: the search still counts, it is just not kept
            logger.warning(f"{path}: cannot keep the near-duplicate search ({e.strerror or e})")
    return out
