"""Where the time goes, measured in one process on this machine: model-only training and inference
throughput of EfficientNet-Lite0 at 128 and 224 px, the data pipeline (decode + augment), the data check,
and what the paper's `full` training accuracy costs against `running`.

    python benchmarks/throughput.py [checkpoints/efficientnet_lite0] [data/brain_mri_sample]
"""
import json
import sys
import time
from pathlib import Path

import torch


def images_per_second(fn, batch, warmup=1, steps=4):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def main(argv):
    from transformers import AutoModelForImageClassification

    from hf_medtl.data import build_transforms, load_splits
    from hf_medtl.data.check import inspect_all
    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import Preprocessing
    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import DataArguments, load_recipe

    ckpt = argv[0] if argv else "checkpoints/efficientnet_lite0"
    data_dir = argv[1] if len(argv) > 1 else "data/brain_mri_sample"
    out = {"torch_threads": torch.get_num_threads(), "device": "cpu"}
    model = AutoModelForImageClassification.from_pretrained(ckpt, num_labels=4, ignore_mismatched_sizes=True)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for size in (128, 224):
        x, y = torch.randn(32, 3, size, size), torch.randint(0, 4, (32,))

        def train_step():
            opt.zero_grad()
            model(pixel_values=x, labels=y).loss.backward()
            opt.step()

        model.train()
        out[f"train_img_s_{size}px"] = round(images_per_second(train_step, 32), 1)
        model.eval()
        with torch.inference_mode():
            out[f"infer_img_s_{size}px"] = round(images_per_second(lambda: model(pixel_values=x), 32), 1)
    out["train_ratio_128_over_224"] = round(out["train_img_s_128px"] / out["train_img_s_224px"], 2)

    splits = load_splits(DataArguments(data_dir=data_dir, data_check=False), 0)
    paths = [s.path for s in splits.samples]
    train_tf, eval_tf = build_transforms(Preprocessing((128, 128), (0.5,) * 3, (0.5,) * 3))
    start = time.perf_counter()
    for p in paths:
        train_tf(decode(p))
    out["pipeline_decode_augment_img_s"] = round(len(paths) / (time.perf_counter() - start), 1)
    start = time.perf_counter()
    inspect_all(paths)
    out["data_check_img_s"] = round(len(paths) / (time.perf_counter() - start), 1)

    times = {}
    for mode in ("running", "full"):
        recipe = load_recipe("recipes/demo_brain_lite0.json", ["--train_accuracy", mode, "--num_train_epochs", "2",
                                                             "--adaptive_lr", "false", "--disable_tqdm", "true",
                                                             "--output_dir", f"outputs/bench_train_accuracy_{mode}"])
        start = time.perf_counter()
        run(recipe)
        times[mode] = time.perf_counter() - start
    out["run_s_train_accuracy_running"] = round(times["running"], 1)
    out["run_s_train_accuracy_full"] = round(times["full"], 1)
    out["full_over_running"] = round(times["full"] / times["running"], 2)
    Path("outputs").mkdir(exist_ok=True)
    Path("outputs/throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
