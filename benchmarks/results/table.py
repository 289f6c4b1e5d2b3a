"""The README's tables from benchmarks/results/:  python benchmarks/results/table.py

1. Each recommended recipe against the transformers example recipe (``<recipe>/results.jsonl`` of
   benchmarks/recipes_vs_example.py, summarised as its summary.json is).
2. Choosing the toolkit's defaults: two toolkit recipes run with ``--recipe_only`` on the same (seed, fold) test
   folds, paired run by run (the same summary: mean ± sd, paired t / Wilcoxon, McNemar per seed)."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from recipes_vs_example import summarise  # noqa: E402

NAMES = {"breastmnist_best": "BreastMNIST (624 images, 64 px, 5 epochs)",
         "pneumoniamnist_best": "PneumoniaMNIST (5,232 images, 64 px, 3 epochs)",
         "brain_mri_best": "Brain MRI (all 5,708 images, 128 px, 5 epochs)",
         "brain_mri_best_subset1000": "Brain MRI (1,000-image subset, 128 px, 5 epochs)"}
# (variant, baseline, title): the same seeds and folds, toolkit side only.
PAIRS = [("breastmnist_best_notta", "breastmnist_paper", "BreastMNIST: default recipe vs seed 000 (paper)"),
         ("pneumoniamnist_best_notta", "pneumoniamnist_paper", "PneumoniaMNIST: default recipe vs seed 000 (paper)"),
         ("breastmnist_best", "breastmnist_best_notta", "BreastMNIST: + flip TTA vs without"),
         ("pneumoniamnist_best", "pneumoniamnist_best_notta", "PneumoniaMNIST: + flip TTA vs without")]
HEAD = "| {} | protocol | {} | {} | difference (W/T/L) | paired t / Wilcoxon p | McNemar p per seed |"


def row(title: str, s: dict, protocol: str, images: bool) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    d = s["difference"]
    tests = f"{s['paired_t']['p_value']:.3f} / {s['wilcoxon']['p_value']:.3f}" if "paired_t" in s else "n/a"
    mc = ", ".join(f"{m['p_value']:.3f} ({m['only_a_correct']} vs {m['only_b_correct']})" for m in s["mcnemar"].values())
    out = (f"| {title} | {protocol} | {pct(s['recipe_accuracy']['mean'])} ± {pct(s['recipe_accuracy']['sd'])}% | "
           f"{pct(s['example_accuracy']['mean'])} ± {pct(s['example_accuracy']['sd'])}% | {d['mean'] * 100:+.2f} "
           f"({d['wins']}/{d['ties']}/{d['losses']}) | {tests} | {mc} |")
    return out + (f" {s['recipe_images_processed']:,} / {s['example_images_processed']:,} |" if images else "")


def protocol_of(rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    folds = sorted({r["fold"] for r in rows})
    return (f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}) × "
            + ("5-fold cv" if len(folds) == 5 else "1 grouped 80/20 split") + f", {len(rows)} runs")


def results(name: str) -> list[dict]:
    path = HERE / name / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


print(HEAD.format("dataset", "recommended recipe", "example recipe") + " training images, each side |")
print("|---" * 8 + "|")
for name, title in NAMES.items():
    rows = results(name)
    if rows:  # (from the rows, so that a comparison still running shows what it has)
        print(row(title, summarise(rows, {}), protocol_of(rows), images=True))
print()
print(HEAD.format("comparison", "variant", "baseline"))
print("|---" * 7 + "|")
for variant, baseline, title in PAIRS:
    a, b = {(r["seed"], r["fold"]): r for r in results(variant)}, {(r["seed"], r["fold"]): r for r in results(baseline)}
    keys = sorted(set(a) & set(b))
    if not keys:
        continue
    rows = [{"seed": k[0], "fold": k[1],
             **{f"recipe_{m}": a[k][f"recipe_{m}"] for m in ("accuracy", "f1_macro", "correct", "images_processed", "train_s")},
             **{f"example_{m}": b[k][f"recipe_{m}"] for m in ("accuracy", "f1_macro", "correct", "images_processed", "train_s")}}
            for k in keys]
    print(row(title, summarise(rows, {}), protocol_of(rows), images=False))
