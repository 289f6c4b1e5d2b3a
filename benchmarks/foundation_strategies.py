"""Issue #21: linear probe, k-NN, full, partial and LoRA on the offline EfficientNet-Lite0 at equal steps, as
K-fold cross-validation with paired tests (`hf-medtl study strategies --folds K`), on BreastMNIST and Brain MRI.

    OMP_NUM_THREADS=1 python benchmarks/foundation_strategies.py [--only breastmnist|brain_mri] [--key value ...]

Every strategy of a dataset runs the same recipe: the same epochs, batch size and learning rate, and no early stop
(stop_patience 1000: Algorithm 1 may still halve the LR, θ* is the best validation epoch), so that each trains for
the same number of steps. Each fold is run first in a process of its own (`hf-medtl finetune`, exactly the run
the study makes), so that its peak memory (on CPU the process's RSS, hf_medtl/training/memory.py) is not raised by
the runs before it; then `study strategies` reads every fold back (training nothing) and writes the tables. A
rerun skips finished folds. Writes benchmarks/results/foundation_strategies/<dataset>/ (summary.json, report.md,
the folds' wall times: process start, data check, training and scoring) and
benchmarks/results/foundation_strategies.md (the tables of every dataset finished so far).

- BreastMNIST (../shared/datasets/medmnist/breastmnist.npz, its train + val; the test split carved out as the
  recipe does), 64 px, 10 epochs, 5 folds.
- Brain MRI (../shared/datasets/brain_tumor_mri/Training): a seeded subset of 250 images per class (1,000),
  64 px, 5 epochs, 3 folds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strategies import subset_csv  # noqa: E402  (benchmarks/strategies.py)

RESULTS = REPO / "benchmarks" / "results" / "foundation_strategies"
STRATEGIES = "linear_probe,knn,full,partial,lora"
FIXED = ["--stop_patience", "1000", "--disable_tqdm", "true"]
DATASETS = {  # recipe, folds, output_dir, images per class of a subset (None: all)
    "breastmnist": ("benchmarks/recipes/breastmnist_strategies.json", 5, "outputs/foundation_strategies/breastmnist",
                    None),
    "brain_mri": ("benchmarks/recipes/brain_mri_strategies.json", 3, "outputs/foundation_strategies/brain_mri", 250),
}


def arguments(name: str, extra: list[str]) -> tuple[str, int, list[str]]:
    """(recipe, folds, overrides) of one dataset; the Brain MRI subset's CSV written beside its outputs."""
    from hf_medtl.config.recipe import load_recipe

    recipe, folds, output_dir, per_class = DATASETS[name]
    argv = [*FIXED, "--output_dir", output_dir, *extra]
    if per_class:
        base = load_recipe(recipe, argv)
        csv_file = subset_csv(base.data.data_dir, per_class, base.training.seed, Path(output_dir + "_subset.csv"))
        argv += ["--data_dir", "null", "--csv_file", str(csv_file), "--allow_paths_outside_root", "true"]
    return recipe, folds, argv


def run_folds(recipe: str, folds: int, argv: list[str]) -> dict:
    """Every fold the study will make, each in its own process; {run folder: wall seconds} of those run now."""
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.outputs import holds_complete_run
    from hf_medtl.studies.strategies import parse_strategies, variant_runs

    base = load_recipe(recipe, argv)
    walls = {}
    for name, k, extra, run_dir in variant_runs(base, parse_strategies(STRATEGIES), folds):
        if holds_complete_run(run_dir):
            continue
        cmd = [sys.executable, "-m", "hf_medtl.cli", "finetune", recipe, *argv, *extra, "--output_dir", str(run_dir)]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        walls[str(run_dir)] = round(time.perf_counter() - start, 1)
        print(f"{name} fold {k}: {walls[str(run_dir)]} s", flush=True)
    return walls


def main(argv: list[str]) -> int:
    from hf_medtl.console import setup_logging
    from hf_medtl.studies.strategies import run_strategies

    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only, argv = argv[i + 1], argv[:i] + argv[i + 2:]
        if only not in DATASETS:
            print(f"error: --only {only!r}: choose from {', '.join(DATASETS)}", file=sys.stderr)
            return 2
    os.chdir(REPO)
    setup_logging()
    for name in [n for n in DATASETS if only in (None, n)]:
        recipe, folds, args = arguments(name, argv)
        where = RESULTS / name
        where.mkdir(parents=True, exist_ok=True)
        walls_file = where / "fold_wall_seconds.json"
        walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
        walls |= run_folds(recipe, folds, args)
        walls_file.write_text(json.dumps(walls, indent=2) + "\n")
        s = run_strategies(recipe, args, STRATEGIES, folds)  # reads every fold back
        for f in ("summary.json", "report.md"):
            shutil.copy(Path(s["output_dir"]) / f, where / f)
    # Both tables in one file, from whichever datasets have finished (this run's or an earlier one's).
    tables = [f"## {name}\n\n" + (RESULTS / name / "report.md").read_text().split("\n", 2)[2]
              for name in DATASETS if (RESULTS / name / "report.md").exists()]
    (RESULTS.parent / "foundation_strategies.md").write_text("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
