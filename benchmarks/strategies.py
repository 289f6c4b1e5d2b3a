"""Every fine-tuning strategy on one split and one budget: test accuracy (95% CI), F1 macro, trainable
parameters and seconds per epoch of full, partial, gradual, linear_probe, the bottleneck head on cached
features, and full with class weights.

    python benchmarks/strategies.py RECIPE [--per_class N] [--key value ...]

``--per_class N`` trains on a seeded stratified subset of the recipe's data_dir (N images per class, listed in
a CSV beside the outputs). Writes <output_dir>_strategies.json and .md and prints the Markdown table.
"""
import csv
import json
import random
import sys
from pathlib import Path

from common import run_variants

from hf_medtl.console import setup_logging
from hf_medtl.config.recipe import load_recipe

VARIANTS = {
    "full": [],
    "partial": ["--finetune_strategy", "partial", "--trainable_stages", "3"],
    "gradual": ["--finetune_strategy", "gradual", "--trainable_stages", "1", "--unfreeze_at_epochs", "[2, 3]"],
    "linear_probe": ["--finetune_strategy", "linear_probe"],
    "bottleneck_cached": ["--finetune_strategy", "linear_probe", "--head", "bottleneck", "--bottleneck_dim", "256",
                          "--l1_feature_reg", "1e-5", "--l2_feature_reg", "1e-4", "--augment", "false"],
    "full_class_weights": ["--class_weights", "balanced"],
}


def subset_csv(data_dir: str, per_class: int, seed: int, out: Path) -> Path:
    rng = random.Random(seed)
    rows = []
    for cls in sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir()):
        files = sorted((Path(data_dir) / cls).glob("*.jpg"))
        rows += [(str(f.resolve()), cls) for f in rng.sample(files, min(per_class, len(files)))]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return out


def table(rows: dict) -> str:
    lines = ["| strategy | test accuracy (95% CI) | F1 macro | trainable parameters | s/epoch | epochs | wall s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ci = r["test_accuracy_ci"]
        phases = " → ".join(f"{p['trainable_params']:,}" for p in r["trainable_parameters"])
        lines.append(f"| {name} | {100 * r['test_accuracy']:.2f}% ({100 * ci[0]:.2f}–{100 * ci[1]:.2f}%) | "
                     f"{100 * r['test_f1_macro']:.2f}% | {phases} | {r['s_per_epoch']:.1f} | {r['epochs_run']} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv):
    setup_logging()
    recipe_path, rest = argv[0], argv[1:]
    if "--per_class" in rest:
        i = rest.index("--per_class")
        per_class, rest = int(rest[i + 1]), rest[:i] + rest[i + 2:]
        recipe = load_recipe(recipe_path, rest)
        csv_file = subset_csv(recipe.data.data_dir, per_class, recipe.training.seed,
                              Path(recipe.training.output_dir + "_subset.csv"))
        rest += ["--data_dir", "null", "--csv_file", str(csv_file), "--allow_paths_outside_root", "true"]
    base, results = run_variants(recipe_path, rest, VARIANTS)
    rows = {}
    for name, (m, wall) in results.items():
        rows[name] = {"test_accuracy": m["test"]["accuracy"], "test_accuracy_ci": m["test"]["ci"]["accuracy"],
                      "test_f1_macro": m["test"]["f1_macro"], "trainable_parameters": m["trainable_parameters"],
                      "total_parameters": m["total_parameters"], "epochs_run": m["epochs_run"],
                      "s_per_epoch": m["train_runtime_s"] / max(m["epochs_run"], 1), "wall_s": wall,
                      "cached_features": m["cached_features"], "split_counts": m["split_counts"]}
    rows_md = table(rows)
    speed = rows["full"]["s_per_epoch"] / rows["bottleneck_cached"]["s_per_epoch"]
    text = f"{rows_md}\n\nfull / cached head seconds per epoch: {speed:.1f}x\n"
    Path(f"{base}_strategies.json").write_text(json.dumps(rows, indent=2) + "\n")
    Path(f"{base}_strategies.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
