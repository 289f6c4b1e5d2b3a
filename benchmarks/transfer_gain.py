"""Transfer-learning gain on real data: the same recipe from ImageNet weights and from random weights.

    python benchmarks/transfer_gain.py benchmarks/recipes/brain_lite0.json [--key value ...]

Both runs share the process, the machine and the split; prints test accuracy, epochs, LR reductions and wall
time of each, and their ratios, and writes them to <output_dir>/../transfer_gain.json.
"""
import json
import sys
from pathlib import Path

from common import run_variants


def main(argv):
    base, results = run_variants(argv[0], argv[1:], {"imagenet": ["--pretrained", "true"],
                                                    "random_init": ["--pretrained", "false"]})
    rows = {}
    for name, (m, wall) in results.items():
        rows[name] = {"test_accuracy": m["test"]["accuracy"], "test_accuracy_ci": m["test"]["ci"]["accuracy"],
                      "test_f1_macro": m["test"]["f1_macro"], "epochs_run": m["epochs_run"],
                      "lr_reductions": m["lr_reductions"], "best_epoch": m["best_epoch"],
                      "wall_s": wall, "split_counts": m["split_counts"]}
    rows["ratio_test_accuracy"] = rows["imagenet"]["test_accuracy"] / rows["random_init"]["test_accuracy"]
    out = Path(base).parent / f"{Path(base).name}_transfer_gain.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
