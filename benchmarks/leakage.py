"""What duplicate leakage does to a test score, and how well the leakage guard finds copies.

    python benchmarks/leakage.py benchmarks/recipes/brain_lite0.json [--key value ...]
    python benchmarks/leakage.py guard [--per-size 200] [--out outputs/leakage_guard.json]

The first runs the same recipe split naively (duplicates may straddle train/test) and leak-free (exact and
near duplicates grouped into one split, the default); it prints and writes <output_dir>_leakage.json: test
accuracy of both runs, and for the naive run the number of test images with a copy in its training split and
the accuracy on those versus the rest.

``guard`` measures the near-duplicate rule itself (guard.py beside this file) before (perceptual hash within
4 bits, no pixel check: commit 2ba22f3) and after (every candidate confirmed on the pixels, the default).
"""
import csv
import json
import sys
from pathlib import Path

from common import run_variants


def leaked_test_images(run_dir: Path, groups: list[list[str]]) -> set[str]:
    split = {r["path"]: r["split"] for r in csv.DictReader(open(run_dir / "split_manifest.csv"))}
    leaked = set()
    for group in groups:
        if any(split.get(p) == "train" for p in group):
            leaked |= {p for p in group if split.get(p) == "test"}
    return leaked


def main(argv):
    base, results = run_variants(argv[0], argv[1:], {"leak_free": ["--dedupe", "true"], "naive": ["--dedupe", "false"]})
    rows = {name: {"test_accuracy": m["test"]["accuracy"], "test_accuracy_ci": m["test"]["ci"]["accuracy"],
                   "epochs_run": m["epochs_run"], "wall_s": wall} for name, (m, wall) in results.items()}
    # Duplicate groups as found by the data check (the leak-free run's report lists them all).
    report = json.loads((Path(f"{base}_leak_free") / "data_report.json").read_text())
    groups = report["duplicates"]["exact"] + [g["images"] for g in report["duplicates"]["near"]]
    naive_dir = Path(f"{base}_naive")
    leaked = leaked_test_images(naive_dir, groups)
    preds = list(csv.DictReader(open(naive_dir / "predictions_test.csv")))
    hit = lambda rs: sum(r["label"] == r["predicted"] for r in rs) / max(len(rs), 1)  # noqa: E731
    rows["naive"].update(test_images_with_copy_in_train=len(leaked), test_images=len(preds),
                         accuracy_on_leaked=hit([r for r in preds if r["path"] in leaked]),
                         accuracy_on_rest=hit([r for r in preds if r["path"] not in leaked]))
    rows["leak_free"]["test_images_with_copy_in_train"] = len(leaked_test_images(Path(f"{base}_leak_free"), groups))
    out = Path(base).parent / f"{Path(base).name}_leakage.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["guard"]:
        from guard import main as guard_main

        guard_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
