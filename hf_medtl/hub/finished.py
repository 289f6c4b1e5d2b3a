"""A finished run's folder, written one way for every model the toolkit saves (a run, a seed or fold ensemble):
the resolved recipe, the model card, the report and plots, one predictions CSV per scored split, metrics.json last
(its presence means a complete run), the staging folder moved into place; then the push, when the recipe asks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from hf_medtl import outputs, timings
from hf_medtl.config.recipe import write_resolved
from hf_medtl.evaluation import report
from hf_medtl.hub.card import render_model_card
from hf_medtl.hub.push import push

logger = logging.getLogger("hf_medtl")


def write_finished_run(staging: Path, output_dir: Path, recipe, metrics: dict, predictions: dict, paths: dict,
                       data_report: dict, title: str, *, model=None, report_summary: dict | None = None,
                       history: list | None = None, model_alone: dict | None = None, report_appendix: str = "",
                       timed: bool = False) -> None:
    """Write the run into ``staging`` and commit it to ``output_dir`` (main process only). ``predictions``: split
    -> (probabilities, labels), ``paths``: split -> the image of each row, ``metrics``: the run's metrics.json (its
    split sections are the report's). ``model``: (model, processor) to save here, when the caller has not saved
    them; ``model_alone``: split -> (probabilities, labels) without TTA (predictions_<split>_no_tta.csv);
    ``report_appendix``: markdown added to report.md; ``timed``: metrics.json gets the running clock's phases."""
    if model is not None:
        with outputs.writing(staging / "model.safetensors"):  # a full disk: one line naming the file
            for part in model:
                part.save_pretrained(str(staging))
    write_resolved(recipe, staging)
    if history is not None:
        (staging / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    with timings.phase("card"):
        (staging / "README.md").write_text(str(render_model_card(recipe, metrics, data_report)))
    results = {split: metrics[split] for split in predictions}
    report.write_report(staging, title, results, predictions, report_summary, history)
    if report_appendix:
        with open(staging / "report.md", "a") as f:
            f.write(report_appendix)
    classes = metrics["classes"]
    for split, (probs, labels) in predictions.items():  # validation: a cv fold's out-of-fold predictions
        report.write_predictions(staging / f"predictions_{split}.csv", paths[split], labels, probs, classes)
        if split in (model_alone or {}):  # the image alone: what plain pipeline() gives for each file
            report.write_predictions(staging / f"predictions_{split}_no_tta.csv", paths[split], labels,
                                     model_alone[split][0], classes)
    if timed and (spent := timings.snapshot()) is not None:  # every phase up to this write (hf_medtl/timings.py)
        metrics["timings"] = spent
    (staging / outputs.MARKER).write_text(json.dumps(metrics, indent=2) + "\n")
    outputs.commit(staging, Path(output_dir))
    if recipe.training.push_to_hub:
        logger.info(f"pushed to https://huggingface.co/{push(Path(output_dir), recipe.training)}")
