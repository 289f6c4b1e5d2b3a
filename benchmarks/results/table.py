"""The README's table from benchmarks/results/*_best/summary.json:  python benchmarks/results/table.py"""
import json
from pathlib import Path

NAMES = {"breastmnist_best": "BreastMNIST (624 images, 64 px, 5 epochs)",
         "pneumoniamnist_best": "PneumoniaMNIST (5,232 images, 64 px, 3 epochs)",
         "brain_mri_best": "Brain MRI (1,000-image subset, 128 px, 5 epochs)"}
print("| dataset | protocol | recommended recipe | example recipe | difference (W/T/L) | paired t / Wilcoxon p | McNemar p per seed | training images, each side |")
print("|---|---|---|---|---|---|---|---|")
for name, title in NAMES.items():
    path = Path(__file__).parent / name / "summary.json"
    if not path.exists():
        print(f"| {title} | not run yet | | | | | | |")
        continue
    s = json.loads(path.read_text())
    seeds = ", ".join(s["mcnemar"])
    protocol = (f"{len(s['mcnemar'])} seed(s) ({seeds}) × " +
                ("5-fold cv" if "held-out folds" not in s["protocol"] else "1 grouped 80/20 split") + f", {s['runs']} runs")
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    d = s["difference"]
    tests = (f"{s['paired_t']['p_value']:.2f} / {s['wilcoxon']['p_value']:.2f}" if "paired_t" in s else "n/a (1 run)")
    print(f"| {title} | {protocol} | {pct(s['recipe_accuracy']['mean'])} ± {pct(s['recipe_accuracy']['sd'])}% | "
          f"{pct(s['example_accuracy']['mean'])} ± {pct(s['example_accuracy']['sd'])}% | {d['mean'] * 100:+.2f} "
          f"({d['wins']}/{d['ties']}/{d['losses']}) | {tests} | "
          + ", ".join(f"{m['p_value']:.3f} ({m['only_a_correct']} vs {m['only_b_correct']})" for m in s["mcnemar"].values())
          + f" | {s['recipe_images_processed']:,} / {s['example_images_processed']:,} |")
