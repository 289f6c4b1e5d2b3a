"""report.json / report.md / PNG plots for a run or an evaluation: every number, readable tables, and the
figures a reviewer asks for (training curves as the seed's Figure 3, confusion matrices, ROC, reliability)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_medtl.metrics.medical_classification.medical_classification import calibration_bins

HEADLINE = (("accuracy", "Accuracy"), ("precision_macro", "Precision (macro)"),
            ("recall_macro", "Sensitivity / recall (macro)"), ("specificity_macro", "Specificity (macro)"),
            ("f1_macro", "F1 (macro)"), ("roc_auc", "ROC-AUC"), ("mcc", "Matthews corr."), ("ece", "ECE"))


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


def fmt(key: str, value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if key in ("mcc", "ece") else f"{100 * value:.2f}%"


def markdown(title: str, sections: dict[str, dict], summary: dict | None = None,
             history: list[dict] | None = None) -> str:
    lines = [f"# {title}", ""]
    if summary:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in summary.items()] + [""]
    for name, m in sections.items():
        level = int(100 * m.get("confidence_level", 0.95))
        how = {"bca": "BCa bootstrap", "percentile": "percentile bootstrap"}.get(m.get("ci_method"), "bootstrap")
        lines += [f"## {name} ({m['n']} images)", "", f"| metric | value | {level}% CI ({how}, {m.get('n_bootstrap', 0)}) |",
                  "|---|---|---|"]
        for key, label in HEADLINE:
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


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed): every plot the toolkit draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (110 dpi) and close a matplotlib figure: every plot the toolkit writes goes through here."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def plot_all(plot_dir: Path, curves_by_split: dict, sections: dict, history: list[dict] | None) -> list[Path]:
    plt = pyplot()
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        written.append(save_figure(fig, plot_dir / name))

    if history:
        epochs = [h["epoch"] for h in history]
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
        ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
        ax_acc.plot(epochs, [h.get("val_accuracy") for h in history], "s-", label="validation")
        ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
        for ax in (ax_acc, ax_loss):
            for h in history:
                if h.get("reduced"):
                    ax.axvline(h["epoch"], color="tab:red", ls="--", lw=1)
                if h.get("save_best"):
                    ax.axvline(h["epoch"], color="tab:green", ls=":", lw=1)
            switch = next((h["epoch"] for h in history if h.get("monitor") == "val_loss"), None)
            if switch is not None:
                ax.axvspan(switch - 0.5, epochs[-1] + 0.5, color="tab:gray", alpha=0.12)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        ax_acc.set_ylabel("accuracy")
        ax_loss.set_ylabel("loss")
        ax_acc.plot([], [], color="tab:red", ls="--", label="LR reduced")
        ax_acc.plot([], [], color="tab:green", ls=":", label="θ* saved")
        ax_acc.fill_between([], [], color="tab:gray", alpha=0.12, label="monitoring val loss")
        ax_acc.legend(fontsize=8)
        save(fig, "training_curves.png")

    for split, m in sections.items():
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        names = m["label_names"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        row_norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        for ax, data, title, fmt in ((axes[0], cm, "counts", "{:.0f}"), (axes[1], row_norm, "row-normalised", "{:.2f}")):
            ax.imshow(data, cmap="Blues")
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{split}: {title}")
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center",
                            color="white" if data[i, j] > data.max() / 2 else "black", fontsize=8)
        save(fig, f"confusion_matrix_{split}.png")

        c = curves_by_split.get(split)
        if c:
            fig, (ax_roc, ax_rel) = plt.subplots(1, 2, figsize=(11, 4.5))
            for name, pts in c["roc"].items():
                auc = m["per_class"].get("roc_auc", [None] * len(names))[names.index(name)]
                ax_roc.plot(pts["fpr"], pts["tpr"], label=f"{name} (AUC {auc:.3f})" if auc is not None else name)
            ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
            ax_roc.set_xlabel("1 - specificity")
            ax_roc.set_ylabel("sensitivity")
            ax_roc.set_title(f"{split}: ROC (one-vs-rest)")
            ax_roc.legend(fontsize=8)
            bins = [b for b in c["reliability"] if b["n"]]
            ax_rel.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=1 / len(c["reliability"]),
                       align="edge", edgecolor="k", alpha=0.7, label="accuracy")
            ax_rel.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
            ax_rel.set_xlabel("confidence")
            ax_rel.set_ylabel("accuracy")
            ax_rel.set_title(f"{split}: reliability (ECE {m.get('ece', 0):.3f})")
            ax_rel.legend(fontsize=8)
            save(fig, f"roc_reliability_{split}.png")
    return written


def write_predictions(path: Path, names: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """One row per image: what it is, what the model said, and every class probability."""
    import csv

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
    """sections: split -> metric dict; predictions: split -> (probs, labels)."""
    output_dir = Path(output_dir)
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
