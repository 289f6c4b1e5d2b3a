"""`hf-medtl compare`: finished runs side by side, in the layout of Table 2 of Khoa & Tri; and, for runs scored
on the same test images, the paired differences with their tests (hf_medtl.evaluation.stats), Holm-corrected."""
from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np

from hf_medtl.config.commands import CompareOptions
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.outputs import atomic_write_text
from hf_medtl.config.recipe import dataset_name

COLUMNS = ("dataset", "model", "train_acc", "val_acc", "test_acc", "test_acc_ci", "precision", "recall", "f1",
           "f1_ci", "epochs", "lr_reductions")


def row(run_dir: str | Path) -> dict:
    """A finished run's row (its test split), or an `hf-medtl evaluate` output's (the data it scored, e.g. an
    external validation set beside the internal test)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() and (run_dir / "report.json").is_file():
        return _evaluation_row(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        recipe = json.loads((run_dir / "recipe.json").read_text())
    except FileNotFoundError as e:
        raise HfMedtlError(f"{run_dir}: no {Path(e.filename).name}; not a finished hf_medtl run or evaluation") from None
    return _row(dataset_name(recipe), Path(recipe["model_name_or_path"]).name, metrics["test"], run_dir,
                train_acc=metrics.get("train_accuracy"),
                val_acc=(metrics.get("validation") or {}).get("accuracy"),  # none for a cv fold ensemble
                epochs=metrics["epochs_run"], lr_reductions=metrics["lr_reductions"])


def _evaluation_row(out_dir: Path) -> dict:
    """The row of `hf-medtl evaluate`'s output: its one scored section; no training columns."""
    try:
        report = json.loads((out_dir / "report.json").read_text())
        [(data, test)] = report["metrics"].items()
        model = Path(report["summary"]["model"]).name
    except (OSError, ValueError, KeyError, TypeError):
        raise HfMedtlError(f"{out_dir}: report.json is not an hf-medtl evaluate report; pass finished runs or "
                           "evaluate outputs") from None
    return _row(Path(report["summary"].get("data", data)).stem if data == "test" else data, model, test, out_dir)


def _row(dataset: str, model: str, test: dict, run_dir: Path, **training) -> dict:
    ci = test.get("ci", {})  # none with n_bootstrap 0, nor for multi-label runs (no precision / recall either)
    return {"dataset": dataset, "model": model, "train_acc": training.get("train_acc"), "val_acc": training.get("val_acc"),
            "test_acc": test["accuracy"], "test_acc_ci": ci.get("accuracy", [None, None]),
            "precision": test.get("precision_macro"), "recall": test.get("recall_macro"), "f1": test["f1_macro"],
            "f1_ci": ci.get("f1_macro", [None, None]), "epochs": training.get("epochs", ""),
            "lr_reductions": training.get("lr_reductions", ""), "run": str(run_dir)}


def _pct(x):
    return fmt(None, x, missing="")


def markdown(rows: list[dict]) -> str:
    lines = ["| Run | Dataset | Model | Train Acc | Val Acc | Test Acc (95% CI) | Precision | Recall | F1-score (95% CI) | Epochs | LR reductions |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['dataset']} | {r['model']} | {_pct(r['train_acc'])} | {_pct(r['val_acc'])} | "
                     f"{_pct(r['test_acc'])} ({_pct(r['test_acc_ci'][0])}–{_pct(r['test_acc_ci'][1])}) | "
                     f"{_pct(r['precision'])} | {_pct(r['recall'])} | {_pct(r['f1'])} "
                     f"({_pct(r['f1_ci'][0])}–{_pct(r['f1_ci'][1])}) | {r['epochs']} | {r['lr_reductions']} |")
    return "\n".join(lines) + "\n"


def _test_predictions(run_dir: Path):
    """(sorted (path, label) keys, classes, label ids, probabilities) of the run's test images; None without them."""
    from hf_medtl.evaluation.report import read_predictions

    path = Path(run_dir) / "predictions_test.csv"
    if not path.is_file():
        path = Path(run_dir) / "predictions.csv"  # an evaluate output's
    if not path.is_file():
        return None
    with open(path) as f:
        if "label" not in f.readline().strip().split(","):  # a multi-label run: the paired tests are single-label
            return None
    paths, labels, probs, classes = read_predictions(path)
    order = np.argsort(paths, kind="stable")
    return [(paths[i], classes[labels[i]]) for i in order], classes, labels[order], probs[order]


def paired(run_dirs: list[Path], n_bootstrap: int = CompareOptions.n_bootstrap, seed: int = CompareOptions.seed) -> list[dict]:
    """Every pair of runs scored on the same test images (same files, labels and classes): each headline
    metric's difference with its test; p-values Holm-corrected across the whole table."""
    from hf_medtl.evaluation import stats

    preds = {d: _test_predictions(d) for d in run_dirs}
    rows = []
    for a, b in itertools.combinations([d for d in run_dirs if preds[d]], 2):
        (keys_a, cls_a, labels, probs_a), (keys_b, cls_b, _, probs_b) = preds[a], preds[b]
        if keys_a != keys_b or cls_a != cls_b:
            continue
        rows += [{"run_a": Path(a).name, "run_b": Path(b).name, **r}
                 for r in stats.paired_tests(labels, probs_a, probs_b, n_bootstrap, seed)]
    for r, adjusted in zip(rows, stats.holm([r.get("p_value", 1.0) for r in rows])):
        r["p_holm"] = adjusted
        r["significant"] = adjusted < 0.05
    return rows


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.4f}"  # a bootstrap p of 0 means below 1 / resamples


def paired_markdown(rows: list[dict]) -> str:
    lines = ["Paired differences on the shared test set (A − B; 95% CI by paired bootstrap; p: McNemar exact for "
             "accuracy, DeLong for a binary ROC-AUC, paired bootstrap otherwise; Holm-corrected across the table):", "",
             "| A | B | metric | A | B | A − B (95% CI) | test | p | p (Holm) | differs at 0.05 |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    for r in rows:
        scale, unit = (1, "") if r["metric"] in ("mcc", "ece") else (100, " pp")
        d = lambda v: f"{scale * v:+.{3 if scale == 1 else 2}f}"  # noqa: E731
        ci = f" ({d(r['ci'][0])} to {d(r['ci'][1])})" if "ci" in r else ""
        lines.append(f"| {r['run_a']} | {r['run_b']} | {r['metric']} | {fmt(r['metric'], r['a'])} | "
                     f"{fmt(r['metric'], r['b'])} | {d(r['difference'])}{unit}{ci} | {r['test']} | "
                     f"{_p(r.get('p_value', float('nan')))} | {_p(r['p_holm'])} | {'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str | Path], output_dir: str | Path = CompareOptions.output_dir,
            n_bootstrap: int = CompareOptions.n_bootstrap, seed: int = CompareOptions.seed) -> str:
    rows = sorted((row(d) for d in run_dirs), key=lambda r: (r["dataset"], r["model"]))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    pairs = paired([Path(d) for d in run_dirs], n_bootstrap, seed)
    if pairs:
        table += "\n" + paired_markdown(pairs)
    atomic_write_text(output_dir / "comparison.md", table)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, "run"])
    w.writeheader()
    for r in rows:
        w.writerow({**r, "test_acc_ci": "-".join(f"{v:.4f}" for v in r["test_acc_ci"] if v is not None),
                    "f1_ci": "-".join(f"{v:.4f}" for v in r["f1_ci"] if v is not None)})
    atomic_write_text(output_dir / "comparison.csv", buf.getvalue())
    atomic_write_text(output_dir / "paired.json", json.dumps(pairs, indent=2) + "\n")
    return table
