"""What only the first training step pays (issue 32, item 3): each setting in a process of its own, so that every
one starts cold — import, CUDA context, the model on the device, then the first, second and steady training
steps (forward + backward + AdamW) and the first and second evaluation forwards, on random pixels at the run's
input size and batch, for fp32 / bf16 autocast x contiguous / channels_last (and cudnn.benchmark on, when asked).
Where the first step costs seconds more than the second, the difference is one-off set-up (cuDNN / cuBLAS
loading, kernel selection or run-time compilation for that dtype and layout), not data or callbacks; a step at a
new batch size (an epoch's last, partial batch) and evaluation forwards at 32, 256 and 12 images show whether
each new input shape pays it again.

    python benchmarks/first_step.py [--model_name_or_path checkpoints/efficientnet_lite0] [--image_size 224]
        [--batch 32] [--steps 10] [--out first_step.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"fp32": (False, False, False), "fp32_channels_last": (False, True, False),
            "bf16": (True, False, False), "bf16_channels_last": (True, True, False),
            "bf16_channels_last_benchmark": (True, True, True)}


def one(model_dir: str, size: int, batch: int, steps: int, bf16: bool, channels_last: bool, benchmark: bool) -> dict:
    t0 = time.perf_counter()
    import torch

    from hf_medtl.models import load_backbone
    from hf_medtl.config.arguments import ModelArguments

    out = {"import_s": time.perf_counter() - t0}
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cudnn.benchmark = benchmark
    t = time.perf_counter()
    torch.zeros(1, device=device)
    sync()
    out["device_init_s"] = time.perf_counter() - t
    model, _ = load_backbone(ModelArguments(model_name_or_path=model_dir), ["a", "b"], size)
    t = time.perf_counter()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    sync()
    out["to_device_s"] = time.perf_counter() - t
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)
    dtype = torch.bfloat16 if bf16 else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    model.train()
    out["step1_s"], out["step2_s"] = timed(step), timed(step)
    out["steady_step_s"] = sum(timed(step) for _ in range(steps)) / steps
    # A new input shape (an epoch's last, partial batch): does it pay the first step's set-up again?
    full_x, full_y = x, y
    x, y = full_x[:3], full_y[:3]
    out["new_shape_step1_s"], out["new_shape_step2_s"] = timed(step), timed(step)
    model.eval()

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=bf16):
            model(pixel_values=x)

    x = full_x
    out["eval1_s"], out["eval2_s"] = timed(forward), timed(forward)
    x = full_x.repeat(8, 1, 1, 1)[:256]  # the GPU evaluation batch (in the model's layout)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out["eval256_1_s"], out["eval256_2_s"] = timed(forward), timed(forward)
    x = full_x[:12]  # a split's last, partial evaluation batch
    out["eval12_1_s"], out["eval12_2_s"] = timed(forward), timed(forward)
    out["steady_images_per_s"] = batch / out["steady_step_s"]
    return {k: round(v, 4) for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_name_or_path", default="checkpoints/efficientnet_lite0")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--out", default="outputs/first_step.json")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: this setting alone
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.model_name_or_path, a.image_size, a.batch, a.steps, *SETTINGS[a.one])))
        return 0
    results = {}
    for name in a.settings.split(","):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--model_name_or_path", a.model_name_or_path,
                               "--image_size", str(a.image_size), "--batch", str(a.batch), "--steps", str(a.steps)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        lines = proc.stdout.strip().splitlines()
        results[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-800:]}
        results[name]["process_s"] = round(time.perf_counter() - start, 2)
        print(name, results[name], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
