"""`hf-medtl study imbalance RECIPE --levels none,mild,moderate,severe`: seed 001's Figure 2. Each level
subsamples the training split's minority classes to a ratio of the majority class's count (validation and test
untouched; hf_medtl.data.folds) and is a normal run in ``output_dir/level-<name>``; F1 macro and per-class
recall (sensitivity) are plotted against the level with 95% CIs. Any --key value (an imbalance remedy such as
a weighted loss, where the recipe has one) applies to every level."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats

from hf_medtl.config.commands import IMBALANCE_LEVELS, ImbalanceOptions
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.plots import pyplot, save_figure
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.studies.runs import begin, finish, run_variant


def parse_levels(text: str) -> dict[str, float | None]:
    """'none,mild,1:10,0.02' -> {name: ratio}: a named level, a ratio 1:k, or a fraction in (0, 1]."""
    out = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in IMBALANCE_LEVELS:
            out[item] = IMBALANCE_LEVELS[item]
            continue
        try:
            ratio = 1 / float(item.split(":")[1]) * float(item.split(":")[0]) if ":" in item else float(item)
        except (ValueError, ZeroDivisionError, IndexError):
            ratio = None
        if ratio is None or not 0 < ratio <= 1:
            raise HfMedtlError(f"--levels: '{item}' is not a level; use {', '.join(IMBALANCE_LEVELS)}, a ratio such "
                               "as 1:10, or a fraction in (0, 1]")
        out[item.replace(":", "to")] = ratio
    if not out:
        raise HfMedtlError("--levels: give at least one level, e.g. none,mild,moderate,severe")
    return out


def _train_counts(run_dir: Path, classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    with open(run_dir / "split_manifest.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "train":
                counts[r["label"]] += 1
    return counts


def _recall_ci(m: dict) -> list[list[float] | None]:
    """Wilson 95% interval of each class's recall (correct / support among the test images of that class)."""
    cm = np.array(m["confusion_matrix"])
    return [list(stats.binomtest(int(cm[c, c]), int(cm[c].sum())).proportion_ci(method="wilson"))
            if cm[c].sum() else None for c in range(len(cm))]


def run_imbalance(recipe_path: str | Path, argv: list[str], levels: str = ImbalanceOptions.levels,
                  minority: str | None = None) -> dict:
    from hf_medtl.config.recipe import load_recipe

    base = load_recipe(recipe_path, argv)
    if base.data.multilabel_csv:  # before any level trains: the study would fail only once the first had
        raise HfMedtlError(f"study imbalance: multi-label data (multilabel_csv {base.data.multilabel_csv}) is not "
                           "supported; subsampling minority classes needs one class per image")
    out = Path(base.training.output_dir)
    staging = begin(out)
    extra_minority = ["--minority_classes", '["' + '","'.join(minority.split(",")) + '"]'] if minority else []
    rows = []
    for name, ratio in parse_levels(levels).items():
        extra = [] if ratio is None else ["--imbalance_ratio", repr(ratio), *extra_minority]
        run_dir = out / f"level-{name}"
        m = run_variant(recipe_path, argv, extra, run_dir)["test"]
        rows.append({"level": name, "ratio": ratio, "dir": str(run_dir), "train_counts": _train_counts(run_dir, m["label_names"]),
                     "f1_macro": m["f1_macro"], "f1_macro_ci": m.get("ci", {}).get("f1_macro"),
                     "accuracy": m["accuracy"], "accuracy_ci": m.get("ci", {}).get("accuracy"),
                     "recall": m["per_class"]["recall"], "recall_ci": _recall_ci(m), "classes": m["label_names"]})
    summary = {"recipe": str(recipe_path), "output_dir": str(out), "levels": rows}
    _plot(rows, staging / "plots" / "imbalance.png")
    finish(staging, out, summary, markdown(summary))
    return summary


def _plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    x = np.arange(len(rows))
    names = [f"{r['level']}\n" + ("as is" if r["ratio"] is None else f"1:{1 / r['ratio']:.3g}") for r in rows]
    fig, (ax_f1, ax_rec) = plt.subplots(1, 2, figsize=(10, 3.8))

    def bars(ax, v, ci, **kw):
        v = np.asarray(v, float)
        ci = np.array([c if c else [vi, vi] for c, vi in zip(ci, v)], float)
        ax.errorbar(x, v, yerr=[v - ci[:, 0], ci[:, 1] - v], capsize=3, marker="o", **kw)

    bars(ax_f1, [r["f1_macro"] for r in rows], [r["f1_macro_ci"] for r in rows], label="F1 macro")
    bars(ax_f1, [r["accuracy"] for r in rows], [r["accuracy_ci"] for r in rows], label="accuracy", ls="--")
    for c, cls in enumerate(rows[0]["classes"]):
        bars(ax_rec, [r["recall"][c] for r in rows], [r["recall_ci"][c] for r in rows], label=cls)
    for ax, title in ((ax_f1, "test F1 macro / accuracy (95% CI)"), (ax_rec, "test recall per class (95% Wilson CI)")):
        ax.set_xticks(x, names, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def markdown(s: dict) -> str:
    classes = s["levels"][0]["classes"]
    lines = [f"# Imbalance study: {s['recipe']}", "",
             "Each minority class of the training split keeps at most ratio x the majority class's count; validation "
             "and test are the same images at every level.", "",
             "| level | ratio | train images per class | F1 macro (95% CI) | accuracy | " +
             " | ".join(f"recall {c}" for c in classes) + " |", "|---" * (5 + len(classes)) + "|"]
    for r in s["levels"]:
        ci = r["f1_macro_ci"]
        ratio = "as is" if r["ratio"] is None else f"{r['ratio']:g}"
        lines.append(f"| {r['level']} | {ratio} | "
                     f"{', '.join(f'{k}: {v}' for k, v in r['train_counts'].items())} | {fmt('f1', r['f1_macro'])}"
                     f"{f' ({fmt(None, ci[0])} – {fmt(None, ci[1])})' if ci else ''} | {fmt('a', r['accuracy'])} | " +
                     " | ".join(fmt("r", v) for v in r["recall"]) + " |")
    return "\n".join(lines + ["", "![imbalance](plots/imbalance.png)", ""])
