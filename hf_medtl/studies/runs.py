"""What every study shares: ``run``, one recipe end to end as `hf-medtl finetune` runs it (a single model, or a
seed ensemble); a variant of a recipe run that way in its own folder (skipped when
that folder already holds a finished run of the same recipe on the same data), and the study's own outputs
staged and committed with ``summary.json`` last, so that a study that failed half-way never looks complete.
The study folder's lock (``study_lock``) is held only by what writes the study's own files; each variant's run
holds its own folder's lock (finetune), so independent jobs can train the variants of one study side by side."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from hf_medtl import outputs, timings
from hf_medtl.errors import HfMedtlError
from hf_medtl.studies.reuse import finished, no_checkpoint_yet

logger = logging.getLogger("hf_medtl")
SUMMARY = "summary.json"


def run(recipe) -> dict:
    """Run one recipe end to end, as `hf-medtl finetune` does; return its metrics (the summary, validation and
    test). One model (hf_medtl.stages.run), or with ``ensemble_seeds: N`` its N members and their ensemble. Every
    process runs this; the main one writes. The run has its own clock (timings.command): metrics.json's "timings"."""
    with timings.command():
        if recipe.study.ensemble_seeds > 1:
            return run_seed_ensemble(recipe)
        with timings.phase("startup"):
            from hf_medtl import stages
        return stages.run(recipe)


def run_seed_ensemble(recipe) -> dict:
    """``ensemble_seeds: N``: N runs of the recipe on one split (output_dir/members/seed-S; a rerun skips finished
    ones), saved in output_dir as one model that averages them (hf_medtl/studies/ensemble.py)."""
    from hf_medtl.studies import ensemble

    members = ensemble.seed_members(recipe)
    with outputs.run_lock(recipe.training.output_dir, take=recipe.training.process_index == 0):
        outputs.ensure_writable(recipe.training.output_dir)
        done = [finished(m, m.training.output_dir) or run(m) for m in members]
        return ensemble.save_seed_ensemble(recipe, members, done)


def run_variant(recipe_path: str | Path, argv: list[str], extra: list[str], output_dir: Path) -> dict:
    """The recipe with ``argv`` and ``extra`` overrides, run into ``output_dir``; a finished run there is read
    back instead of rerun when it is this recipe's on the data as it is now (hf_medtl.studies.reuse.finished).
    ``resume_from_checkpoint: last`` resumes a variant that was interrupted and starts one that never wrote a
    checkpoint afresh (instead of failing for want of one), so one override serves every variant of a study."""
    from hf_medtl.config.recipe import load_recipe, require_model

    output_dir = Path(output_dir)
    recipe = load_recipe(recipe_path, [*argv, *extra, "--output_dir", str(output_dir)])
    require_model(recipe, recipe_path)
    done = finished(recipe, output_dir)
    if done is not None:
        return done
    fresh = no_checkpoint_yet(recipe, output_dir)
    if fresh:
        recipe = load_recipe(recipe_path, [*argv, *extra, "--output_dir", str(output_dir), *fresh])
    logger.info(f"{output_dir}: running ({' '.join(extra) or 'the recipe as it is'})")
    return run(recipe)


@contextmanager
def study_lock(output_dir: str | Path, take: bool = True, wait_s: float = 0.0) -> Iterator[Path]:
    """Own the study folder while the study's own files are written (outputs.run_lock). ``wait_s``: wait that long
    for another writer to finish (search workers that end together each write the summary in turn) instead of
    refusing at once; ``take=False`` (ranks other than the main one) takes nothing."""
    deadline = time.monotonic() + wait_s
    with ExitStack() as stack:
        while True:
            try:
                held = stack.enter_context(outputs.run_lock(output_dir, take=take))
                break
            except HfMedtlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        yield held


def begin(output_dir: str | Path, private: bool = False) -> Path:
    """A fresh staging folder inside the (writable) study folder; ``private``: one of this process's own
    (``.staging-*``), for writers that may run side by side (search workers), which must not empty each other's."""
    outputs.ensure_writable(output_dir)
    if private:
        return Path(tempfile.mkdtemp(prefix=outputs.STAGING + "-", dir=output_dir))
    return outputs.staging_dir(Path(output_dir))


def finish(staging: Path, output_dir: str | Path, summary: dict, report_md: str) -> None:
    """report.md beside the staged plots, then summary.json; all moved into place, summary.json last."""
    (staging / "report.md").write_text(report_md)
    (staging / SUMMARY).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    outputs.commit(staging, Path(output_dir), marker=SUMMARY)
