"""Multi-label reports: report.json / report.md (per-label and macro ROC-AUC, F1 at 0.5 and at the validation
Youden thresholds; the scores come from hf_medtl.evaluation.scoring) and the predictions CSV (true findings and
every finding's probability)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from hf_medtl.evaluation.scoring import pct, plain
from hf_medtl.outputs import atomic_write_text


def markdown(title: str, sections: dict, summary: dict) -> str:
    lines = [f"# {title}", "", *[f"- {k.replace('_', ' ')}: {plain(v)}" for k, v in summary.items()], ""]
    for split, m in sections.items():
        lines += [f"## {split} ({m['n']} images)", "",
                  f"Macro ROC-AUC {pct(m['roc_auc_macro'])}; macro F1 at 0.5 {pct(m['f1_macro'])}, at the "
                  f"validation Youden thresholds {pct(m['youden']['f1_macro'])}; mean per-label accuracy at 0.5 "
                  f"{pct(m['accuracy'])}.", "",
                  "| label | positives | ROC-AUC | F1 at 0.5 | threshold (Youden, validation) | F1 at threshold |",
                  "|---|---|---|---|---|---|"]
        pl, y = m["per_label"], m["youden"]
        for j, name in enumerate(m["label_names"]):
            lines.append(f"| {name} | {pl['support'][j]} | {pct(pl['roc_auc'][j])} | {pct(pl['f1'][j])} | "
                         f"{y['thresholds'][j]:.3f} | {pct(y['f1'][j])} |")
        lines.append("")
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, results: dict, summary: dict) -> None:
    """report.json and report.md of a multi-label run or evaluation."""
    (out_dir / "report.json").write_text(json.dumps({"title": title, "summary": summary, "metrics": results},
                                                    indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown(title, results, summary))


def write_predictions(path: Path, files: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """One row per image: its true findings (0/1) and every finding's probability."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", *[f"true_{c}" for c in classes], *[f"prob_{c}" for c in classes]])
    for f, y, p in zip(files, labels, probs):
        w.writerow([f, *[int(v > 0.5) for v in y], *[f"{v:.6f}" for v in p]])
    atomic_write_text(path, buf.getvalue())
