"""Ensembles served as one model. ``ensemble_seeds: N`` trains a recipe N times on one split (seeds seed ..
seed+N-1, each a normal run in output_dir/members/seed-S); `hf-medtl cv --ensemble` takes the fold models. Either
way the members are combined into ONE saved MedtlEnsembleForImageClassification (its forward averages their
probabilities), scored on the images the members share — validation and test for seeds, the test split for cv
folds (each fold validated on other images) — and saved as a finished run: model + processor, predictions, report,
card naming every member with its own scores, and the ensemble's gain over its best member with a paired CI.
What `predictions_test.csv` holds is what pipeline(), predict, evaluate, the app and the ONNX export serve: the
scores come from the saved ensemble's own forward."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from hf_medtl import data, outputs
from hf_medtl.config.recipe import load_recipe
from hf_medtl.data.split import split_seed
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation import report
from hf_medtl.evaluation.scoring import HEADLINE, fmt, score, score_splits
from hf_medtl.evaluation.stats import paired_bootstrap
from hf_medtl.hub.card import ensemble_markdown
from hf_medtl.hub.finished import write_finished_run
from hf_medtl.inference import core
from hf_medtl.models.ensemble import combine
from hf_medtl.studies.reuse import no_checkpoint_yet
from hf_medtl.training.trainer import inference_trainer

logger = logging.getLogger("hf_medtl")
MEMBERS = "members"


def seed_members(recipe) -> list:
    """The member recipes of ``ensemble_seeds``: the recipe with seed S (S = seed .. seed+N-1) on the split of
    its own split seed, into output_dir/members/seed-S, never pushed (the ensemble is)."""
    n, first = recipe.study.ensemble_seeds, recipe.training.seed
    pinned = split_seed(recipe.data, first)
    out = Path(recipe.training.output_dir) / MEMBERS
    # resume_from_checkpoint 'last' resumes the member that was interrupted; the members not started yet (no
    # checkpoint) start afresh instead of failing, and finished ones are reused whatever it says.
    with tempfile.TemporaryDirectory() as tmp:  # every process its own copy: nothing shared is written
        path = Path(tmp) / "recipe.json"
        path.write_text(json.dumps({**recipe.resolved, "ensemble_seeds": 1}, default=str))
        return [load_recipe(path, ["--seed", str(s), "--split_seed", str(pinned), "--output_dir", str(out / f"seed-{s}"),
                                   "--push_to_hub", "false", *no_checkpoint_yet(recipe, out / f"seed-{s}")])
                for s in range(first, first + n)]


def save_seed_ensemble(recipe, members: list, member_metrics: list[dict]) -> dict:
    """The ensemble of the finished ``members`` (their recipes), scored on their validation and test images and
    saved in the recipe's output_dir; its metrics (also on processes other than the main one, which write nothing)."""
    out = Path(recipe.training.output_dir)
    dirs = [Path(m.training.output_dir) for m in members]
    _same_split(dirs)
    with recipe.training.main_process_first(desc="ensemble"):  # the main process builds it, the others wait
        if recipe.training.process_index == 0:
            save_ensemble(recipe, dirs, [d.name for d in dirs], member_metrics, out, ("validation", "test"), "seeds")
    return json.loads((out / outputs.MARKER).read_text())


def _same_split(dirs: list[Path]) -> None:
    """Members scored together must have trained on one split: their manifests give every file the same split."""
    def splits(d):
        return {key: r["split"] for key, r in (data.read_manifest(d) or {}).items()}

    first = splits(dirs[0])
    for d in dirs[1:]:
        if splits(d) != first:
            raise HfMedtlError(f"{d}: its split differs from {dirs[0]}'s; ensemble members must share one split "
                               "(remove the members folder and run again)")


def save_ensemble(recipe, member_dirs: list[Path], names: list[str], member_metrics: list[dict], out: Path,
                  split_names: tuple[str, ...], kind: str) -> dict:
    """Combine, score on ``split_names`` (the images every member shares) and write a finished run into ``out``
    (metrics.json last). ``kind``: 'seeds' or 'cv folds', for the card."""
    model, processor, classes = combine(member_dirs, names, list(core.RUN_TTA_VIEWS[recipe.evaluation.tta]))
    member = load_recipe(member_dirs[0] / "recipe.json")  # the split every member was scored on
    splits = data.load_splits(member.data, member.training.seed, member_dirs[0], write=False)
    datasets = data.to_datasets(splits, data.preprocessing_from_processor(processor), member.data, contextlib.nullcontext)
    trainer = inference_trainer(model, recipe.training.per_device_eval_batch_size, recipe.training)
    predictions = {s: core.dataset_probabilities(trainer, datasets[s]) for s in split_names}
    seed = recipe.training.seed
    results = (score_splits(predictions, classes, recipe.evaluation, seed) if "validation" in predictions else
               {s: score(p, y, classes, recipe.evaluation, seed) for s, (p, y) in predictions.items()})
    paths = {s: [splits.relpath(x) for x in splits.files(s)] for s in split_names}
    rows = [_member_row(n, d, m) for n, d, m in zip(names, member_dirs, member_metrics)]
    counts = splits.counts()
    if "validation" not in split_names:  # fold models: together they trained on the whole pool
        counts = {"train": counts["train"] + counts["validation"], "validation": 0, "test": counts["test"]}
    metrics = {
        "epochs_run": max(m["epochs_run"] for m in member_metrics),
        "lr_reductions": max(m["lr_reductions"] for m in member_metrics), "best_epoch": None,
        "train_runtime_s": sum(m["train_runtime_s"] for m in member_metrics),
        "total_parameters": sum(p.numel() for p in model.parameters()), "model_class": type(model).__name__,
        "split_counts": counts, "classes": classes,
        "ensemble": {"kind": kind, "members": rows,
                     **_gain(predictions["test"], paths["test"], rows, recipe.evaluation.n_bootstrap, seed)},
        **results}
    staging = outputs.staging_dir(out)
    shutil.copy(member_dirs[0] / data.MANIFEST, staging / data.MANIFEST)
    write_finished_run(staging, out, recipe, metrics, predictions, paths, splits.report,
                       f"{out.name}: ensemble of {len(rows)} ({kind})", model=(model, processor),
                       report_appendix="\n## Ensemble\n\n" + ensemble_markdown(metrics["ensemble"]))
    logger.info(f"ensemble of {len(rows)}: test accuracy {fmt('accuracy', results['test']['accuracy'])}; saved in {out}")
    return metrics


def _member_row(name: str, run_dir: Path, m: dict) -> dict:
    return {"name": name, "dir": str(run_dir), "test": {k: m["test"].get(k) for k in HEADLINE},
            "validation_accuracy": (m.get("validation") or {}).get("accuracy"), "epochs_run": m["epochs_run"]}


def _gain(test: tuple, paths: list[str], rows: list[dict], n_bootstrap: int, seed: int) -> dict:
    """The ensemble against its best member on the test images (the member best on test: the strictest comparison
    there is, since no rule on validation could pick better): accuracy difference with a paired bootstrap CI, and
    against the members' mean accuracy."""
    probs, labels = test
    best = max(rows, key=lambda r: r["test"]["accuracy"])
    if np.asarray(labels).ndim == 2:  # multi-label: the per-finding comparison is not a single accuracy
        return {"best_member": best["name"]}
    member_paths, _, member_probs, _ = report.read_predictions(Path(best["dir"]) / "predictions_test.csv")
    order = {p: i for i, p in enumerate(member_paths)}
    if sorted(order) != sorted(paths):
        raise HfMedtlError(f"{best['dir']}: its test predictions are of other images than the ensemble's")
    member_probs = member_probs[[order[p] for p in paths]]
    boot = paired_bootstrap(labels, probs, member_probs, max(n_bootstrap, 1), seed, metrics=("accuracy",))["accuracy"]
    return {"best_member": best["name"], "gain_over_best_member": boot,
            "mean_member_accuracy": float(np.mean([r["test"]["accuracy"] for r in rows]))}

