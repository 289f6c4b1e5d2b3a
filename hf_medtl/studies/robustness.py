"""`hf-medtl study robustness MODEL_DIR DATA`: a saved model scored under graded perturbations (noise, blur,
contrast, brightness, JPEG, rotation, downsampling; hf_medtl.studies.perturbations), each applied to the
decoded image before the saved processor, with accuracy and ROC-AUC and their 95% CIs per severity."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from hf_medtl.config.commands import RobustnessOptions as Defaults
from hf_medtl.errors import HfMedtlError
from hf_medtl.outputs import atomic_write_text
from hf_medtl.evaluation.plots import pyplot, save_figure
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.studies.perturbations import LEVELS, SEVERITIES, perturb
from hf_medtl.studies.runs import begin, finish

logger = logging.getLogger("hf_medtl")
PARTIAL = ".partial"  # one JSON per finished (perturbation, severity): a rerun skips those


def run_robustness(model_dir: str | Path, data: str | Path, output_dir: str | Path | None = None,
                   split: str = Defaults.split, perturbations: str = Defaults.perturbations,
                   severities: str = Defaults.severities, batch_size: int = Defaults.batch_size,
                   n_bootstrap: int = Defaults.n_bootstrap, seed: int = Defaults.seed, allow_pickle_weights: bool = False,
                   trust_remote_code: bool = False) -> dict:
    from hf_medtl.config.arguments import EvaluationArguments
    from hf_medtl.data import image_dataset
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.data.scored import load_samples, readable_samples
    from hf_medtl.evaluation.scoring import score

    names, levels = _conditions(perturbations, severities)
    model_dir = Path(model_dir)
    out = Path(output_dir) if output_dir else model_dir.parent / f"{model_dir.name}_robustness_{Path(data).stem}"
    served = _single_label_model(model_dir, allow_pickle_weights, trust_remote_code)
    classes = served.classes
    staging = begin(out)
    samples, _ = readable_samples(load_samples(data, split, classes, keys=served.keys), data, "error",
                                  served.max_pixels)
    to_pixels = eval_transform(served.processor)  # the saved processor: what the model was evaluated with
    eval_args = EvaluationArguments(n_bootstrap=n_bootstrap, ci_method="percentile")
    results = {}
    for name, severity in [("clean", 0)] + [(p, s) for p in names for s in levels if s > 0]:
        part = out / PARTIAL / f"{name}-{severity}.json"
        if part.is_file():
            results[(name, severity)] = json.loads(part.read_text())
            continue
        dataset = image_dataset(samples, classes, lambda img, p=name, s=severity: to_pixels(
            img if p == "clean" else perturb(img, p, s)))
        m = score(*served.dataset_probabilities(dataset, batch_size), classes, eval_args, seed)  # the run's views
        results[(name, severity)] = {k: m.get(k) for k in ("accuracy", "roc_auc", "f1_macro", "n")} | {"ci": m.get("ci", {})}
        atomic_write_text(part, json.dumps(results[(name, severity)]))
        logger.info(f"{name} severity {severity}: accuracy {m['accuracy']:.4f}")
    rows = [{"perturbation": p, "severity": s, "parameter": LEVELS[p][s],
             **(results[("clean", 0)] if s == 0 else results[(p, s)])} for p in names for s in levels]
    summary = {"model": str(model_dir), "data": str(data), "images": len(samples), "output_dir": str(out),
               "n_bootstrap": n_bootstrap, "rows": rows}
    _plot(rows, names, staging / "plots" / "robustness.png")
    finish(staging, out, summary, markdown(summary))
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    return summary


def _conditions(perturbations: str, severities: str) -> tuple[list[str], list[int]]:
    """(perturbation names, severities with 0) of the command line, checked."""
    names = list(LEVELS) if perturbations == "all" else [p.strip() for p in perturbations.split(",")]
    unknown = [p for p in names if p not in LEVELS]
    levels = sorted({int(s) for s in severities.split(",") if s.strip().isdigit()} | {0})
    if unknown or any(s not in SEVERITIES for s in levels):
        raise HfMedtlError(f"--perturbations {perturbations} / --severities {severities}: use any of "
                           f"{', '.join(LEVELS)} and severities 0..5")
    return names, levels


def _single_label_model(model_dir: Path, allow_pickle_weights: bool, trust_remote_code: bool):
    """The saved single-label model as it is served (hf_medtl.inference.core.load: its run's TTA views); a
    multi-label one is refused before any work (its data would otherwise be read as a single-label CSV, and the CSV
    blamed)."""
    from hf_medtl.inference import core

    served = core.load(model_dir, None, allow_pickle_weights, trust_remote_code)
    if served.multi_label:
        raise HfMedtlError(f"{model_dir}: a multi-label model; the robustness study supports single-label models "
                           "only (accuracy and ROC-AUC of one class per image under each perturbation)")
    return served


def _plot(rows: list[dict], names: list[str], path: Path) -> None:
    plt = pyplot()
    keys = [k for k in ("accuracy", "roc_auc") if all(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name in names:
            rs = [r for r in rows if r["perturbation"] == name]
            x = [r["severity"] for r in rs]
            v = np.array([r[key] for r in rs])
            ci = np.array([r["ci"].get(key, [r[key]] * 2) for r in rs])
            ax.plot(x, v, "o-", label=name, ms=3)
            ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.12)
        ax.set_xlabel("severity (0: clean)")
        ax.set_title(f"{key} under perturbation (95% CI)")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def markdown(s: dict) -> str:
    severities = sorted({r["severity"] for r in s["rows"]})
    lines = [f"# Robustness: {s['model']} on {s['data']} ({s['images']} images)", "",
             "Accuracy (ROC-AUC) per perturbation and severity; 95% percentile bootstrap CIs in summary.json.", "",
             "| perturbation | " + " | ".join(f"severity {v}" for v in severities) + " |", "|---" * (len(severities) + 1) + "|"]
    for name in dict.fromkeys(r["perturbation"] for r in s["rows"]):
        cells = [r for r in s["rows"] if r["perturbation"] == name]
        lines.append(f"| {name} | " + " | ".join(f"{fmt('a', r['accuracy'])} ({fmt('a', r['roc_auc'])})" for r in cells) + " |")
    return "\n".join(lines + ["", "![robustness](plots/robustness.png)", ""])
