"""Epoch wall time with the decode-once cache against decoding the source files every epoch: the same recipe,
one epoch (training + validation pass), in this process, interleaved and repeated; the Trainer's
train_runtime is compared (the cache is built once beforehand, as a first run does; its build time is reported
separately). At each input size.

    python benchmarks/cache_epoch.py [checkpoints/efficientnet_lite0] [../shared/datasets/brain_tumor_mri/Training]
        [--images 640] [--sizes 128 224] [--repeats 2]

Writes benchmarks/results/cache_epoch.json.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_and_data_arguments  # noqa: E402


def subset_csv(data_dir: str, n: int, path: Path) -> Path:
    from hf_medtl.data.sources import scan_class_folders

    samples = scan_class_folders(data_dir).samples
    samples = samples[:: max(1, len(samples) // n)][:n]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([str(s.path.resolve()), s.label] for s in samples)
    return path


def main():
    p = argparse.ArgumentParser()
    model_and_data_arguments(p, 640)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = subset_csv(a.data_dir, a.images, tmp / "subset.csv")
        recipe = tmp / "r.json"
        recipe.write_text(json.dumps({"model_name_or_path": a.checkpoint, "csv_file": str(table),
                                      "allow_paths_outside_root": True, "num_train_epochs": 1, "n_bootstrap": 0,
                                      "data_cache_dir": str(tmp / "cache"), "seed": 1}))
        for size in a.sizes:
            def one(cached: bool, tag: str) -> tuple[float, float]:
                start = time.perf_counter()
                m = run(load_recipe(recipe, ["--image_size", str(size), "--data_cache", str(cached).lower(),
                                             "--output_dir", str(tmp / f"run_{size}_{tag}")]))
                return m["train_runtime_s"], time.perf_counter() - start

            _, first_wall = one(True, "build")  # builds the cache (and times a whole first run)
            times = {"source files": [], "cache": []}
            for r in range(a.repeats):
                for name in times:
                    times[name].append(one(name == "cache", f"{name[:5]}{r}")[0])
            src, cached = statistics.median(times["source files"]), statistics.median(times["cache"])
            rows.append({"size": size, "images": a.images, "epoch_s_source_files": round(src, 1),
                         "epoch_s_cache": round(cached, 1), "speed-up": round(src / cached, 2),
                         "first_run_wall_s": round(first_wall, 1), "all": times})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(__file__).parent / "results" / "cache_epoch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
