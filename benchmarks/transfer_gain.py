"""Transfer-learning gain on real data: the same recipe from ImageNet weights and from random weights.

    python benchmarks/transfer_gain.py recipes/brain_lite0.json [--key value ...]

Both runs share the process, the machine and the split; prints test accuracy, epochs, LR reductions and wall
time of each, and their ratios, and writes them to <output_dir>/../transfer_gain.json.
"""
import json
import sys
import time
from pathlib import Path

from hf_medtl.finetune import run
from hf_medtl.recipe import load_recipe


def main(argv):
    recipe_path, overrides = argv[0], argv[1:]
    base = load_recipe(recipe_path, overrides).training.output_dir
    rows = {}
    for name, pretrained in (("imagenet", "true"), ("random_init", "false")):
        recipe = load_recipe(recipe_path, [*overrides, "--pretrained", pretrained, "--output_dir", f"{base}_{name}"])
        start = time.perf_counter()
        m = run(recipe)
        rows[name] = {"test_accuracy": m["test"]["accuracy"], "test_accuracy_ci": m["test"]["ci"]["accuracy"],
                      "test_f1_macro": m["test"]["f1_macro"], "epochs_run": m["epochs_run"],
                      "lr_reductions": m["lr_reductions"], "best_epoch": m["best_epoch"],
                      "wall_s": round(time.perf_counter() - start, 1), "split_counts": m["split_counts"]}
        print(name, rows[name], flush=True)
    rows["ratio_test_accuracy"] = rows["imagenet"]["test_accuracy"] / rows["random_init"]["test_accuracy"]
    out = Path(base).parent / f"{Path(base).name}_transfer_gain.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
