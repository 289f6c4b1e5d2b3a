"""`hf-medtl evaluate`: a saved model scored on any data the toolkit reads (class folders, a label CSV, a MedMNIST
.npz split, a multi-label CSV; read by hf_medtl.data.scored), as its run scored it: the data check's rules for
unreadable images, the image cache's pixels, the run's TTA, the one scoring interface (hf_medtl.evaluation.scoring)
and the same reports."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hf_medtl.data.scored import eval_dataset, load_samples, multilabel_samples, readable_samples

logger = logging.getLogger("hf_medtl")


def evaluate_model(model_dir: str | Path, data: str | Path, options=None, **overrides) -> dict:
    """Score the saved model in ``model_dir`` on ``data`` and write the evaluation's folder: its metrics (with
    output_dir and cam_overlays). ``options``: the evaluate command's options (hf_medtl.config.commands.
    EvaluateOptions, one field per flag; its defaults when None); keyword ``overrides`` set single fields of it."""
    import dataclasses

    from hf_medtl.config.commands import EvaluateOptions
    from hf_medtl.outputs import commit, ensure_writable, run_lock, staging_dir

    o = dataclasses.replace(options or EvaluateOptions(), **overrides)  # an unknown keyword: TypeError naming it
    model_dir, data_name = Path(model_dir), Path(data).stem
    output_dir = Path(o.output_dir) if o.output_dir else model_dir.parent / f"{model_dir.name}_eval_{data_name}"
    ensure_writable(output_dir, "--output_dir")  # before any inference whose results would be lost
    # The evaluation owns its folder (a second one into it is refused) and writes into a staging folder moved into
    # place at the end, report.json last: a killed or failed re-evaluation leaves the previous one whole.
    with run_lock(output_dir):
        staging = staging_dir(output_dir)
        metrics, overlays = _evaluate_into(staging, model_dir, data, data_name,
                                           **{f.name: getattr(o, f.name) for f in dataclasses.fields(o)
                                              if f.name != "output_dir"})
        shutil.rmtree(output_dir / "cam", ignore_errors=True)  # an earlier evaluation's overlays: not this one's
        commit(staging, output_dir, marker="report.json")
    overlays = [output_dir / p.relative_to(staging) for p in overlays]
    return {"output_dir": str(output_dir), **metrics, "cam_overlays": [str(p) for p in overlays]}


def _evaluate_into(staging: Path, model_dir: Path, data, data_name: str, *, split, batch_size, n_bootstrap, seed,
                   ci_method, on_bad_image, allow_pickle_weights, trust_remote_code, allow_paths_outside_root,
                   max_image_pixels, cam, data_cache, data_cache_dir, data_keys):
    """Score the model and write the evaluation's files into ``staging``: (metrics, Grad-CAM overlay paths)."""
    from hf_medtl import timings
    from hf_medtl.config.arguments import EvaluationArguments
    from hf_medtl.evaluation import report
    from hf_medtl.evaluation.scoring import score
    from hf_medtl.inference import core

    with timings.phase("model_load"):  # scored as its run scored it: with the views its metrics averaged over
        served = core.load(model_dir, None, allow_pickle_weights, trust_remote_code,
                           {**(data_keys or {}), "max_image_pixels": max_image_pixels})
    # the run's columns and NIfTI slice, unless flags say otherwise
    keys, classes, processor, multi_label = served.keys, served.classes, served.processor, served.multi_label
    max_pixels = served.max_pixels
    with timings.phase("data"):
        samples = (multilabel_samples(data, classes, allow_paths_outside_root) if multi_label
                   else load_samples(data, split, classes, allow_outside=allow_paths_outside_root, keys=keys))
        samples, shas = readable_samples(samples, data, on_bad_image, max_pixels)
    with timings.phase("image_cache"):
        dataset = eval_dataset(samples, shas, classes, processor, max_pixels, data_cache, data_cache_dir,
                                multi_label)
    tta = served.views
    with timings.phase("scoring"):
        probs, labels = served.dataset_probabilities(dataset, batch_size)
        thresholds = _run_thresholds(model_dir, classes) if multi_label else None
        metrics = score(probs, labels, classes, EvaluationArguments(n_bootstrap=n_bootstrap, ci_method=ci_method),
                        seed, thresholds)
    # (a multi-label evaluation's predictions keep the name its run's have)
    name = "predictions_test.csv" if multi_label else "predictions.csv"
    report.write_predictions(staging / name, [str(s.path) for s in samples], labels, probs, classes)
    summary = {"model": str(model_dir), "data": str(data), "images": len(samples),
               "tta": "hflip" if "hflip" in tta else "none"}
    section = "test" if multi_label else data_name
    report.write_report(staging, f"{model_dir.name} on {data_name}", {section: metrics}, {section: (probs, labels)},
                        summary)
    overlays = []
    if cam and not multi_label:  # what a reviewer looks at first: the N most confident errors of each class
        from hf_medtl.inference.explain import error_overlays

        with timings.phase("cam"):
            overlays = error_overlays(served, samples, probs, labels, cam, staging / "cam")
    return metrics, overlays


def _run_thresholds(model_dir: Path, classes: list[str]) -> list[float]:
    """The per-finding thresholds a multi-label run chose on validation (its metrics.json); 0.5 when unknown."""
    import json

    try:
        return json.loads((Path(model_dir) / "metrics.json").read_text())["validation"]["youden"]["thresholds"]
    except (OSError, ValueError, KeyError, TypeError):
        return [0.5] * len(classes)
