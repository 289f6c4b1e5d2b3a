"""How epoch time grows with the number of images and the input size: one epoch (training + validation pass,
decode-once cache warm) for every (images, size) pair; a table and a plot.

    python benchmarks/scaling.py [checkpoints/efficientnet_lite0] [../shared/datasets/brain_tumor_mri/Training]
        [--images 1000 2000 5000] [--sizes 96 128 224]

Writes benchmarks/results/scaling.json and scaling.png.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_epoch import subset_csv  # noqa: E402
from common import model_and_data_arguments  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    model_and_data_arguments(p, [1000, 2000, 5000])
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 224])
    a = p.parse_args()

    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.evaluation.plots import pyplot, save_figure

    rows = []
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in a.images:
            table = subset_csv(a.data_dir, n, tmp / f"subset_{n}.csv")
            recipe = tmp / f"r{n}.json"
            recipe.write_text(json.dumps({"model_name_or_path": a.checkpoint, "csv_file": str(table), "seed": 1,
                                          "allow_paths_outside_root": True, "num_train_epochs": 1, "n_bootstrap": 0,
                                          "data_cache_dir": str(tmp / "cache")}))
            for size in a.sizes:
                start = time.perf_counter()
                m = run(load_recipe(recipe, ["--image_size", str(size), "--output_dir", str(tmp / f"run_{n}_{size}")]))
                rows.append({"images": n, "size": size, "train_images": m["split_counts"]["train"],
                             "epoch_s": round(m["train_runtime_s"], 1), "run_wall_s": round(time.perf_counter() - start, 1),
                             "train_img_s": round(m["split_counts"]["train"] / m["train_runtime_s"], 1)})
                print(json.dumps(rows[-1]), flush=True)
                (out / "scaling.json").write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for size in a.sizes:
        pts = [(r["images"], r["epoch_s"]) for r in rows if r["size"] == size]
        ax.plot(*zip(*pts), marker="o", label=f"{size} px")
    ax.set(xlabel="images in the dataset (80% train, 10% validation)", ylabel="epoch wall time (s)",
           title=f"EfficientNet-Lite0, {os.cpu_count()} CPU cores")
    ax.legend()
    save_figure(fig, out / "scaling.png")


if __name__ == "__main__":
    main()
