"""The figures a reviewer asks for, as PNGs: training curves as seed 000's Figure 3, confusion matrices, ROC and
reliability diagrams. Every plot the toolkit draws goes through pyplot() and save_figure()."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
    """Every figure of a run or an evaluation into ``plot_dir``; returns the files written."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = [save_figure(training_curves(history), plot_dir / "training_curves.png")] if history else []
    for split, m in sections.items():
        written.append(save_figure(confusion_matrices(split, m), plot_dir / f"confusion_matrix_{split}.png"))
        if curves_by_split.get(split):
            written.append(save_figure(roc_reliability(split, m, curves_by_split[split]),
                                       plot_dir / f"roc_reliability_{split}.png"))
    return written


def training_curves(history: list[dict]):
    """Accuracy and loss per epoch (train, validation), with the schedule's decisions marked."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h.get("val_accuracy") for h in history], "s-", label="validation")
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    switch = next((h["epoch"] for h in history if h.get("monitor") == "val_loss"), None)
    for ax in (ax_acc, ax_loss):
        for h in history:
            if h.get("reduced"):
                ax.axvline(h["epoch"], color="tab:red", ls="--", lw=1)
            if h.get("save_best"):
                ax.axvline(h["epoch"], color="tab:green", ls=":", lw=1)
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
    return fig


def confusion_matrices(split: str, m: dict):
    """The confusion matrix of a split as counts and row-normalised."""
    plt = pyplot()
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
    return fig


def roc_reliability(split: str, m: dict, curves: dict):
    """One-vs-rest ROC curves and the reliability diagram of a split."""
    plt = pyplot()
    names = m["label_names"]
    fig, (ax_roc, ax_rel) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, pts in curves["roc"].items():
        auc = m["per_class"].get("roc_auc", [None] * len(names))[names.index(name)]
        ax_roc.plot(pts["fpr"], pts["tpr"], label=f"{name} (AUC {auc:.3f})" if auc is not None else name)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.set_xlabel("1 - specificity")
    ax_roc.set_ylabel("sensitivity")
    ax_roc.set_title(f"{split}: ROC (one-vs-rest)")
    ax_roc.legend(fontsize=8)
    bins = [b for b in curves["reliability"] if b["n"]]
    ax_rel.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=1 / len(curves["reliability"]),
               align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax_rel.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    ax_rel.set_xlabel("confidence")
    ax_rel.set_ylabel("accuracy")
    ax_rel.set_title(f"{split}: reliability (ECE {m.get('ece', 0):.3f})")
    ax_rel.legend(fontsize=8)
    return fig
