"""What every study shares: a variant of a recipe run as a normal finetune run in its own folder (skipped when
that folder already holds a finished run of the same recipe on the same data), and the study's own outputs
staged and committed with ``summary.json`` last, so that a study that failed half-way never looks complete."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from hf_medtl import outputs
from hf_medtl.studies.reuse import finished

logger = logging.getLogger("hf_medtl")
SUMMARY = "summary.json"


def run_variant(recipe_path: str | Path, argv: list[str], extra: list[str], output_dir: Path) -> dict:
    """The recipe with ``argv`` and ``extra`` overrides, run into ``output_dir``; a finished run there is read
    back instead of rerun when it is this recipe's on the data as it is now (hf_medtl.studies.reuse.finished)."""
    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe, require_model

    output_dir = Path(output_dir)
    recipe = load_recipe(recipe_path, [*argv, *extra, "--output_dir", str(output_dir)])
    require_model(recipe, recipe_path)
    done = finished(recipe, output_dir)
    if done is not None:
        return done
    logger.info(f"{output_dir}: running ({' '.join(extra) or 'the recipe as it is'})")
    return run(recipe)


def begin(output_dir: str | Path) -> Path:
    """A fresh staging folder inside the (writable) study folder."""
    outputs.ensure_writable(output_dir)
    return outputs.staging_dir(Path(output_dir))


def finish(staging: Path, output_dir: str | Path, summary: dict, report_md: str) -> None:
    """report.md beside the staged plots, then summary.json; all moved into place, summary.json last."""
    (staging / "report.md").write_text(report_md)
    (staging / SUMMARY).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    outputs.commit(staging, Path(output_dir), marker=SUMMARY)
