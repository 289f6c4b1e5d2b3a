"""Does the data wait for the model? Images/s delivered by the training data pipeline alone (decode + resize +
augment + tensor, batches of 32 in the main process, as the CPU default runs it), from the source files and
from the decode-once cache, against the model's training step alone (forward + backward + AdamW on tensors
already in memory), at each input size. Data wait share = data time per image / model step time per image.

    python benchmarks/data_pipeline.py [checkpoints/efficientnet_lite0] [../shared/datasets/brain_tumor_mri/Training]
        [--images 640] [--sizes 128 224] [--workers 0 2]

All in one process, interleaved; writes benchmarks/results/data_pipeline.json.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_and_data_arguments  # noqa: E402


def data_rate(dataset, workers: int, batch: int = 32) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         collate_fn=lambda rows: torch.stack([r["pixel_values"] for r in rows]),
                                         persistent_workers=False)
    start, n = time.perf_counter(), 0
    for x in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def model_rate(model, size: int, batch: int = 32, steps: int = 4) -> float:
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, model.config.num_labels, (batch,))

    def step():
        opt.zero_grad()
        model(pixel_values=x, labels=y).loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    model_and_data_arguments(p, 640)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    a = p.parse_args()

    from hf_medtl import data, models
    from hf_medtl.config.arguments import ModelArguments
    from hf_medtl.data.dataset import cached_loaders, image_dataset, sample_keys
    from hf_medtl.data.sources import scan_class_folders

    samples = scan_class_folders(a.data_dir).samples
    samples = samples[:: max(1, len(samples) // a.images)][: a.images]
    classes = sorted({s.label for s in samples})
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for size in a.sizes:
            model, processor = models.load_backbone(ModelArguments(model_name_or_path=a.checkpoint), classes, size)
            prep = data.preprocessing_from_processor(processor)
            train_tf, _ = data.build_transforms(prep)
            start = time.perf_counter()
            _, cached = cached_loaders(samples, sample_keys(samples), prep, cache_dir, crop_scale_min=0.8,
                                       train_samples=samples)
            build_s = time.perf_counter() - start
            sets = {"source files": image_dataset(samples, classes, train_tf),
                    "cache": image_dataset(samples, classes, train_tf, load=cached)}
            step = model_rate(model, size)
            for workers in a.workers:
                for name, ds in sets.items():
                    rate = data_rate(ds, workers)
                    rows.append({"size": size, "from": name, "workers": workers, "data_img_s": round(rate, 1),
                                 "model_step_img_s": round(step, 1), "data_wait_share": round(step / rate, 3),
                                 "cache_build_s": round(build_s, 1)})
                    print(json.dumps(rows[-1]), flush=True)
    out = Path(__file__).parent / "results" / "data_pipeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                                          f"torch {torch.__version__}, threads {torch.get_num_threads()}",
                               "images": len(samples), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
