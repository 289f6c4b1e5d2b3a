"""Reusing a finished run instead of training it again (studies, ensemble members): only when its folder holds a
complete run of the same recipe on the data as it is now; and resuming a run that was interrupted. Kept apart
from runs.py, which runs recipes, so that the seed ensembles (ensemble.py, which runs.py calls) can use it too."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from hf_medtl import outputs
from hf_medtl.config.recipe import HOW_IT_RUNS, recipe_difference  # noqa: F401 (search.py imports HOW_IT_RUNS here)
from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")


def finished(recipe, output_dir: Path) -> dict | None:
    """The metrics of the finished run in ``output_dir`` when it can stand for running ``recipe`` there, else None.
    A finished run of another recipe is refused in one line (a silent mix of settings); one that finished on
    other data (images added, removed or changed since) is run again on the current data, with a warning: the
    study's other variants run on the current data too, so reusing it would mix two datasets in one summary."""
    output_dir = Path(output_dir)
    if not outputs.holds_complete_run(output_dir):
        return None
    _refuse_other_recipe(output_dir, recipe)
    changed = data_changed(recipe, output_dir)
    if changed is None:
        logger.info(f"{output_dir}: finished earlier (metrics.json there); not rerun")
        return json.loads((output_dir / outputs.MARKER).read_text())
    logger.warning(f"{output_dir}: finished on other data ({changed}); running it again on the current data")
    return None


def _refuse_other_recipe(output_dir: Path, recipe) -> None:
    before = json.loads((output_dir / "recipe.json").read_text())
    # output_dir is this folder itself, perhaps reached by another path (a cluster node's mount, a symlink)
    changed = recipe_difference(before, json.loads(json.dumps(recipe.resolved, default=str)), ignore=("output_dir",))
    if changed:
        raise HfMedtlError(f"{output_dir} holds a finished run of another recipe ({changed}); "
                           "remove it or choose another output_dir")


def data_changed(recipe, output_dir: Path) -> str | None:
    """Why the finished run in ``output_dir`` did not train on the split the current data gives, or None when
    it did. The data stage is rerun as finetune would run it into that folder (the run's own manifest reused when
    the data is unchanged), writing nothing and building no model; then every file's split and pixel hash is
    compared with the run's split_manifest.csv. Costs one data check (every image decoded once)."""
    from hf_medtl.data import MANIFEST, load_splits, read_manifest

    rows = read_manifest(output_dir)
    if rows is None:
        return f"no {MANIFEST} to check it against"
    before = {key: (r["split"], r["sha1"]) for key, r in rows.items()}
    splits = load_splits(recipe.data, recipe.training.seed, Path(output_dir), write=False)
    shas = splits.shas or [None] * len(splits.samples)
    now = {(splits.relpath(s), s.label): (split, sha or "")
           for s, split, sha in zip(splits.samples, splits.assignment, shas)}
    added, removed = len(now.keys() - before.keys()), len(before.keys() - now.keys())
    moved = sum(now[k] != before[k] for k in now.keys() & before.keys())
    if added or removed or moved:
        return f"{added} image(s) added, {removed} removed, {moved} changed or in another split"
    return None


def no_checkpoint_yet(recipe, output_dir: Path) -> list[str]:
    """The overrides that let ``resume_from_checkpoint: last`` serve every run of a study: a run that never wrote a
    checkpoint in ``output_dir`` starts afresh (``--resume_from_checkpoint false``) instead of failing for want of
    one; an interrupted one resumes (no override)."""
    resume = str(recipe.training.resume_from_checkpoint or "").lower()
    started = any((c / outputs.STATE_FILE).is_file() for c in Path(output_dir).glob("checkpoint-*"))
    return ["--resume_from_checkpoint", "false"] if resume in ("last", "true") and not started else []
