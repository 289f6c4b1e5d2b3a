"""`hf-medtl compare`: finished runs side by side, in the layout of Table 2 of Khoa & Tri."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from hf_medtl.errors import HfMedtlError
from hf_medtl.recipe import dataset_name

COLUMNS = ("dataset", "model", "train_acc", "val_acc", "test_acc", "test_acc_ci", "precision", "recall", "f1",
           "f1_ci", "epochs", "lr_reductions")


def row(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        recipe = json.loads((run_dir / "recipe.json").read_text())
    except FileNotFoundError as e:
        raise HfMedtlError(f"{run_dir}: no {Path(e.filename).name}; not a finished hf_medtl run") from None
    test, val = metrics["test"], metrics["validation"]
    return {"dataset": dataset_name(recipe), "model": Path(recipe["model_name_or_path"]).name,
            "train_acc": metrics.get("train_accuracy"), "val_acc": val["accuracy"], "test_acc": test["accuracy"],
            "test_acc_ci": test["ci"]["accuracy"], "precision": test["precision_macro"],
            "recall": test["recall_macro"], "f1": test["f1_macro"], "f1_ci": test["ci"]["f1_macro"],
            "epochs": metrics["epochs_run"], "lr_reductions": metrics["lr_reductions"], "run": str(run_dir)}


def _pct(x):
    return "" if x is None else f"{100 * x:.2f}%"


def markdown(rows: list[dict]) -> str:
    lines = ["| Run | Dataset | Model | Train Acc | Val Acc | Test Acc (95% CI) | Precision | Recall | F1-score (95% CI) | Epochs | LR reductions |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['dataset']} | {r['model']} | {_pct(r['train_acc'])} | {_pct(r['val_acc'])} | "
                     f"{_pct(r['test_acc'])} ({_pct(r['test_acc_ci'][0])}–{_pct(r['test_acc_ci'][1])}) | "
                     f"{_pct(r['precision'])} | {_pct(r['recall'])} | {_pct(r['f1'])} "
                     f"({_pct(r['f1_ci'][0])}–{_pct(r['f1_ci'][1])}) | {r['epochs']} | {r['lr_reductions']} |")
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str | Path], output_dir: str | Path = ".") -> str:
    rows = sorted((row(d) for d in run_dirs), key=lambda r: (r["dataset"], r["model"]))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (output_dir / "comparison.md").write_text(table)
    with open(output_dir / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*COLUMNS, "run"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "test_acc_ci": "-".join(f"{v:.4f}" for v in r["test_acc_ci"]),
                        "f1_ci": "-".join(f"{v:.4f}" for v in r["f1_ci"])})
    return table
