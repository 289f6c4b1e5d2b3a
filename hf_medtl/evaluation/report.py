"""report.json / report.md / PNG plots for a run or an evaluation: every number, readable tables, and the
figures a reviewer asks for (training curves as the seed's Figure 3, confusion matrices, ROC, reliability)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_medtl import timings
from hf_medtl.evaluation import multilabel
from hf_medtl.evaluation.plots import plot_all
from hf_medtl.evaluation.scoring import HEADLINE, fmt, plain
from hf_medtl.metrics.medical_classification.medical_classification import calibration_bins


def roc_points(positive: np.ndarray, score: np.ndarray) -> tuple[list[float], list[float]]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last_of_tie = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]
    tp = np.cumsum(positive)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    n_pos, n_neg = max(positive.sum(), 1), max((~positive).sum(), 1)
    return [0.0, *(fp / n_neg).tolist()], [0.0, *(tp / n_pos).tolist()]


def curves(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """The plotted data, kept in report.json too."""
    ks = [1] if len(classes) == 2 else range(len(classes))
    roc = {classes[k]: dict(zip(("fpr", "tpr"), roc_points(labels == k, probs[:, k])))
           for k in ks if 0 < (labels == k).sum() < len(labels)}
    return {"roc": roc, "reliability": calibration_bins(labels, probs)}


def markdown(title: str, sections: dict[str, dict], summary: dict | None = None,
             history: list[dict] | None = None) -> str:
    lines = [f"# {title}", ""]
    if summary:
        lines += [f"- {k.replace('_', ' ')}: {plain(v)}" for k, v in summary.items()] + [""]
    for name, m in sections.items():
        level = int(100 * m.get("confidence_level", 0.95))
        how = {"bca": "BCa bootstrap", "percentile": "percentile bootstrap"}.get(m.get("ci_method"), "bootstrap")
        lines += [f"## {name} ({m['n']} images)", "", f"| metric | value | {level}% CI ({how}, {m.get('n_bootstrap', 0)}) |",
                  "|---|---|---|"]
        for key, label in HEADLINE.items():
            if m.get(key) is not None:
                ci = m.get("ci", {}).get(key)
                lines.append(f"| {label} | {fmt(key, m[key])} | "
                             f"{fmt(key, ci[0]) + ' – ' + fmt(key, ci[1]) if ci else ''} |")
        pc, names = m["per_class"], m["label_names"]
        lines += ["", "| class | support | precision | sensitivity | specificity | F1 | ROC-AUC |", "|---|---|---|---|---|---|---|"]
        for i, c in enumerate(names):
            auc = pc.get("roc_auc", [None] * len(names))[i]
            lines.append(f"| {c} | {pc['support'][i]} | {fmt('', pc['precision'][i])} | {fmt('', pc['sensitivity'][i])} | "
                         f"{fmt('', pc['specificity'][i])} | {fmt('', pc['f1'][i])} | {fmt('', auc)} |")
        lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| **{names[i]}** | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(m["confusion_matrix"])]
        lines.append("")
    if history:
        lines += ["## Training history", "", "| epoch | train acc | train loss | val acc | val loss | lr | monitor | decision |",
                  "|---|---|---|---|---|---|---|---|"]
        for h in history:
            decision = ", ".join(k for k in ("save_best", "reduced", "stop") if h.get(k)) or "-"
            lines.append(f"| {h['epoch']} | {h['train_accuracy']:.4f} | {h['train_loss']:.4f} | "
                         f"{(h.get('val_accuracy') or 0):.4f} | {h['val_loss']:.4f} | {h['lr']:.3g} | "
                         f"{h.get('monitor', '-')} | {decision} |")
        lines.append("")
    return "\n".join(lines)


def write_predictions(path: Path, names: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """One row per image: what it is, what the model said, and every class probability (multi-label: its true
    findings and every finding's probability)."""
    import csv

    if np.asarray(labels).ndim == 2:
        return multilabel.write_predictions(path, names, labels, probs, classes)

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
        for name, label, p in zip(names, labels, probs):
            w.writerow([name, classes[int(label)], classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """What write_predictions wrote: (paths, label ids, class probabilities, classes)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [k[2:] for k in (rows[0] if rows else {}) if k.startswith("p_")]
    return ([r["path"] for r in rows], np.array([classes.index(r["label"]) for r in rows], dtype=int),
            np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes)), classes)


def write_report(output_dir: Path, title: str, sections: dict, predictions: dict, summary: dict | None = None,
                 history: list[dict] | None = None) -> None:
    """sections: split -> metric dict; predictions: split -> (probs, labels). report.json, report.md and the plots
(multi-label: report.json and report.md of its per-label scores)."""
    with timings.phase("report"):
        return _write_report(Path(output_dir), title, sections, predictions, summary, history)


def _write_report(output_dir: Path, title: str, sections: dict, predictions: dict, summary: dict | None,
                  history: list[dict] | None) -> None:
    if any(np.asarray(labels).ndim == 2 for _, labels in predictions.values()):
        return multilabel.write_report(output_dir, title, sections, summary or {})
    curves_by_split = {split: curves(labels, probs, sections[split]["label_names"])
                       for split, (probs, labels) in predictions.items()}
    report = {"title": title, "summary": summary or {}, "metrics": sections, "curves": curves_by_split,
              "history": history or []}
    plots = plot_all(output_dir / "plots", curves_by_split, sections, history)
    report["plots"] = [str(p.relative_to(output_dir)) for p in plots]
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(title, sections, summary, history)
    md += "\n" + "\n".join(f"![{p.stem}]({p.relative_to(output_dir)})" for p in plots) + "\n"
    (output_dir / "report.md").write_text(md)
