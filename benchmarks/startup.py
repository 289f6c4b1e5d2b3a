"""Start-up: seconds from the command to the first training step (`hf-medtl finetune`), and the whole of
`hf-medtl evaluate`, each with a cold image cache (first run) and a warm one (every later run), on N images.

    python benchmarks/startup.py [checkpoints/efficientnet_lite0] [../shared/datasets/brain_tumor_mri/Training]
        [--images 1000] [--size 128]

Writes benchmarks/results/startup.json.

    python benchmarks/startup.py --help_only [--baseline OTHER_CHECKOUT] [--runs 21]

only times `hf-medtl --help` (the median of N runs, interleaved with the same command from another checkout of
hf_medtl, e.g. the commit before a change, when --baseline is given) and writes benchmarks/results/startup_help.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_epoch import subset_csv  # noqa: E402
from common import model_and_data_arguments  # noqa: E402

FIRST_STEP = """
import os, sys, time
from hf_medtl import cli
from hf_medtl.training import trainer as train
def first_step(self, *a, **k):
    print("FIRST_STEP", time.time(), flush=True)
    os._exit(0)
train.MedTrainer.training_step = first_step
sys.exit(cli.main(sys.argv[1:]))
"""


def timed(cmd: list[str], env: dict, until_first_step: bool = False) -> float:
    start = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if until_first_step:
        line = next((l for l in out.stdout.splitlines() if l.startswith("FIRST_STEP")), None)
        if line is None:
            raise SystemExit(out.stderr[-2000:])
        return float(line.split()[1]) - start
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return time.time() - start


def help_only(baseline: str | None, runs: int) -> None:
    """Median seconds of `python -m hf_medtl.cli --help` here and (interleaved, same load) in ``baseline``."""
    import statistics

    here = str(Path(__file__).resolve().parents[1])
    trees = {"this checkout": here, **({"baseline": str(Path(baseline).resolve())} if baseline else {})}
    times = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hf_medtl.cli", "--help"], env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    rows = {name: round(1000 * statistics.median(v), 1) for name, v in times.items()}
    print(json.dumps({"hf-medtl --help, median ms": rows, "runs": runs}, indent=2))
    out = Path(__file__).parent / "results" / "startup_help.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "runs": runs, "median_ms": rows}, indent=2) + "\n")


def main():
    p = argparse.ArgumentParser()
    model_and_data_arguments(p, 1000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--help_only", action="store_true", help="only time `hf-medtl --help`")
    p.add_argument("--baseline", help="with --help_only: another checkout of hf_medtl to time beside this one")
    p.add_argument("--runs", type=int, default=21)
    a = p.parse_args()
    if a.help_only:
        return help_only(a.baseline, a.runs)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = subset_csv(a.data_dir, a.images, tmp / "subset.csv")
        env = {**os.environ, "HF_MEDTL_IMAGE_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
        recipe = tmp / "r.json"
        recipe.write_text(json.dumps({"model_name_or_path": a.checkpoint, "csv_file": str(table), "image_size": a.size,
                                      "allow_paths_outside_root": True, "num_train_epochs": 1, "n_bootstrap": 0,
                                      "max_steps": 1, "output_dir": str(tmp / "run")}))
        for state in ("cold", "warm"):
            rows[f"finetune to first step, {state} cache"] = timed(
                [sys.executable, "-c", FIRST_STEP, "finetune", str(recipe), "--output_dir", str(tmp / f"run_{state}")],
                env, until_first_step=True)
        subprocess.run([sys.executable, "-m", "hf_medtl.cli", "finetune", str(recipe)], env=env, check=True,
                       capture_output=True)  # a saved model to evaluate
        env["HF_MEDTL_IMAGE_CACHE"] = str(tmp / "cache_eval")
        for state in ("cold", "warm"):
            rows[f"evaluate {a.images} images, {state} cache"] = timed(
                [sys.executable, "-m", "hf_medtl.cli", "evaluate", str(tmp / "run"), str(table), "--n_bootstrap", "0",
                 "--allow_paths_outside_root", "--output_dir", str(tmp / f"eval_{state}")], env)
        rows["python -c 'import hf_medtl.cli' (interpreter + CLI)"] = timed(
            [sys.executable, "-c", "import hf_medtl.cli"], env)
    rows = {k: round(v, 1) for k, v in rows.items()}
    print(json.dumps(rows, indent=2))
    out = Path(__file__).parent / "results" / "startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "images": a.images, "size": a.size, "seconds": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
