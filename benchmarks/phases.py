"""Where a run's wall time goes, hf_medtl beside the transformers example recipe: each as its own process on the
same data, backbone, input size, epochs and batch, one after the other, with the phases each one times
(hf_medtl/timings.py: metrics.json's "timings"; the example recipe's the same way) and, when there is a GPU, its
utilisation sampled every 0.2 s beside the run (NVML, else nvidia-smi): the share of samples above 0 over the whole
wall, and the mean and peak while training (from the first epoch's start to the last epoch's end, read from the
run's phase timeline). hf_medtl's `evaluate` of the saved model on a split of the same .npz is timed too.

    python benchmarks/phases.py --npz_file .gpudata/pneumoniamnist.npz --class_names '["normal", "pneumonia"]'
        [--model_name_or_path checkpoints/efficientnet_lite0] [--image_size 224] [--epochs 3] [--batch 32]
        [--evaluate_split val] [--out outputs/phases] [--only hf_medtl,example] [--timeout 600]

Writes OUT/phases.json and OUT/phases.md (the table) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("startup", "data", "image_cache", "model_load", "train_setup", "first_epoch", "later_epochs", "scoring",
         "report", "card", "save", "cam", "other", "total")


class GpuSampler:
    """GPU utilisation (%) and memory used (MiB) of GPU 0 every ``interval`` seconds, with Unix times, in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.samples, self.source = interval, [], None
        self._stop = threading.Event()
        self._read = self._nvml() or self._smi()
        self._thread = None

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = f"nvml: {pynvml.nvmlDeviceGetName(handle)}"

            def read():
                u = pynvml.nvmlDeviceGetUtilizationRates(handle)
                return float(u.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2 ** 20
            return read
        except Exception:
            return None

    def _smi(self):
        if shutil.which("nvidia-smi") is None:
            return None
        try:
            name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            return None
        self.source = f"nvidia-smi: {name}"

        def read():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout.split(",")
            return float(out[0]), float(out[1])
        return read

    @property
    def available(self) -> bool:
        return self._read is not None

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), *self._read()))
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self, start: float, end: float, train: tuple[float, float] | None) -> dict | None:
        if not self.available:
            return None
        run = [s for s in self.samples if start <= s[0] <= end]
        out = {"source": self.source, "samples": len(run),
               "busy_share": round(sum(s[1] > 0 for s in run) / len(run), 3) if run else None,
               "peak_util": max((s[1] for s in run), default=None),
               "peak_memory_mib": max((s[2] for s in run), default=None)}
        if train is not None:
            during = [s[1] for s in run if train[0] <= s[0] <= train[1]]
            out["train_mean_util"] = round(sum(during) / len(during), 1) if during else None
            out["train_samples"] = len(during)
        return out


def training_window(timeline: Path) -> tuple[float, float] | None:
    """(first epoch's start, last epoch's end) in Unix time, from a HF_MEDTL_TIMELINE file."""
    if not timeline.is_file():
        return None
    start = end = None
    for line in timeline.read_text().splitlines():
        what, name, t = line.split()
        if what == "enter" and name == "first_epoch" and start is None:
            start = float(t)
        if what == "leave" and name in ("first_epoch", "later_epochs"):
            end = float(t)
    return (start, end) if start is not None and end is not None else None


def run_process(name: str, cmd: list[str], work: Path, sampler: GpuSampler, timeout: float) -> dict:
    """Run one command as its own process with a phase timeline; its wall, output tail and GPU summary."""
    timeline = work / f"{name}.timeline"
    timeline.unlink(missing_ok=True)
    env = {**os.environ, "HF_MEDTL_TIMELINE": str(timeline), "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), "PYTHONUNBUFFERED": "1"}
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout or "")
    end = time.time()
    (work / f"{name}.log").write_text(out)
    print(f"{name}: exit {rc}, {end - start:.1f} s", flush=True)
    return {"cmd": cmd, "returncode": rc, "wall_s": round(end - start, 2), "log_tail": out[-1500:],
            "gpu": sampler.summary(start, end, training_window(timeline))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--npz_file", default="../shared/datasets/medmnist/pneumoniamnist.npz")
    p.add_argument("--class_names", default='["normal", "pneumonia"]')
    p.add_argument("--model_name_or_path", default="checkpoints/efficientnet_lite0")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--evaluate_split", default="val", help="the .npz split `hf-medtl evaluate` scores ('' : none)")
    p.add_argument("--only", default="hf_medtl,example")
    p.add_argument("--out", default="outputs/phases")
    p.add_argument("--timeout", type=float, default=600, help="seconds each process may run")
    a, extra = p.parse_known_args(argv)
    out = Path(a.out).resolve()
    work = out / "runs"
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    results = {"machine": machine(), "settings": {k: v for k, v in vars(a).items() if k not in ("out",)},
               "extra_overrides": extra, "runs": {}}
    recipe = work / "recipe.json"
    recipe.write_text(json.dumps({"model_name_or_path": a.model_name_or_path, "npz_file": a.npz_file,
                                  "class_names": json.loads(a.class_names), "image_size": a.image_size,
                                  "num_train_epochs": a.epochs, "per_device_train_batch_size": a.batch,
                                  "seed": a.seed, "output_dir": str(work / "hf_medtl")}))
    def write() -> str:  # after every run: a check stopped by its time guard keeps what finished
        (out / "phases.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        md = table(results)
        (out / "phases.md").write_text(md + "\n")
        return md

    with GpuSampler() as sampler:
        for name in a.only.split(","):
            write()
            if name == "hf_medtl":
                r = run_process("hf_medtl", [py, "-m", "hf_medtl.cli", "finetune", str(recipe), *extra], work,
                                sampler, a.timeout)
                r.update(read_metrics(work / "hf_medtl" / "metrics.json", a.epochs))
                results["runs"]["hf_medtl"] = r
                if a.evaluate_split and r["returncode"] == 0:
                    e = run_process("evaluate", [py, "-m", "hf_medtl.cli", "evaluate", str(work / "hf_medtl"),
                                                 a.npz_file, "--split", a.evaluate_split, "--output_dir",
                                                 str(work / "evaluate")], work, sampler, a.timeout)
                    e["timings"] = parse_row(e["log_tail"])
                    results["runs"]["hf_medtl evaluate"] = e
                    write()
            elif name == "example":
                r = run_process("example", [py, "benchmarks/example_recipe.py", "--model_name_or_path",
                                            a.model_name_or_path, "--npz_file", a.npz_file, "--image_size",
                                            str(a.image_size), "--epochs", str(a.epochs), "--batch_size", str(a.batch),
                                            "--seed", str(a.seed), "--output_dir", str(work / "example")], work,
                                sampler, a.timeout)
                r.update(read_metrics(work / "example" / "metrics.json", a.epochs))
                results["runs"]["example"] = r
    print(write())
    return 0


def read_metrics(path: Path, epochs: int) -> dict:
    """timings, train_runtime_s and the images trained, from a metrics.json (hf_medtl's or the example recipe's)."""
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    out = {"timings": m.get("timings"), "train_runtime_s": m.get("train_runtime_s")}
    counts = m.get("split_counts")
    n_train = counts["train"] if counts else m.get("train")
    epochs_run = m.get("epochs_run", epochs)
    t = m.get("timings") or {}
    if n_train and out["train_runtime_s"]:
        out["images_per_s"] = round(n_train * epochs_run / out["train_runtime_s"], 1)
    if n_train and t.get("later_epochs") and epochs_run > 1:
        out["steady_images_per_s"] = round(n_train * (epochs_run - 1) / t["later_epochs"], 1)
        out["later_epoch_s"] = round(t["later_epochs"] / (epochs_run - 1), 2)
    out["epochs_run"], out["train_images"] = epochs_run, n_train
    return out


def parse_row(log: str) -> dict | None:
    """The timings row a command printed last, as {name: seconds}."""
    from hf_medtl.timings import NAMES

    keys = {shown: key for key, shown in NAMES.items()}
    lines = [ln for ln in log.splitlines() if ln.startswith("timings: ")]
    if not lines:
        return None
    out = {}
    for part in lines[-1][len("timings: "):].split(" | "):
        name, _, value = part.rpartition(" ")
        out[keys.get(name, name)] = seconds(value)
    return out


def seconds(text: str) -> float:
    """0.04s, 12.3s, 4m05s, 2h10m -> seconds."""
    if text.endswith("s") and "m" in text:
        m, s = text[:-1].split("m")
        return int(m) * 60 + float(s)
    if text.endswith("s"):
        return float(text[:-1])
    h, m = text[:-1].split("h")
    return int(h) * 3600 + int(m) * 60


def machine() -> dict:
    import platform

    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                             time.gmtime())}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    try:
        with open("/proc/loadavg") as f:
            info["loadavg"] = f.read().split()[:3]
    except OSError:
        pass
    return info


def table(results: dict) -> str:
    runs = results["runs"]
    names = list(runs)
    fmt = lambda v: "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"machine: {results['machine']}", f"settings: {results['settings']}", "",
             "| seconds | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ORDER:
        row = [(runs[n].get("timings") or {}).get(key) for n in names]
        if any(v is not None for v in row):
            lines.append(f"| {key} | " + " | ".join(fmt(v) for v in row) + " |")
    for key in ("wall_s", "train_runtime_s", "later_epoch_s", "images_per_s", "steady_images_per_s", "returncode"):
        lines.append(f"| {key} | " + " | ".join(fmt(runs[n].get(key)) for n in names) + " |")
    for key in ("busy_share", "train_mean_util", "peak_util", "peak_memory_mib"):
        row = [(runs[n].get("gpu") or {}).get(key) for n in names]
        lines.append(f"| gpu {key} | " + " | ".join(fmt(v) for v in row) + " |")
    if not any(runs[n].get("gpu") for n in names):
        lines.append("\nGPU utilisation: not measured (no GPU)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
