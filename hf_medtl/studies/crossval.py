"""The cross-validation engine every study shares (`hf-medtl cv`, `study strategies --folds K`, cv --ensemble): the
fold runs of K-fold cross-validation on the non-test pool, each a normal run with overrides that give every run one
test split (the split seed) and, per seed, one partition of the pool (the fold seed); the spread of their metrics;
and their out-of-fold validation predictions pooled (each pool image once) and scored once."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_medtl.data.split import split_seed
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.scoring import HEADLINE


@dataclass(frozen=True)
class FoldRun:
    """One run of a cross-validation: seed ``seed``, fold ``fold`` (None: the recipe's own split, --folds 1),
    trained into ``dir`` with the recipe overrides ``extra``."""
    seed: int
    fold: int | None
    dir: Path
    extra: tuple[str, ...]

    def name(self) -> str:
        return f"seed {self.seed}" + (f" fold {self.fold}" if self.fold is not None else "")


def fold_runs(base, folds: int, seeds: int = 1, root: str | Path | None = None) -> tuple[FoldRun, ...]:
    """Every run of K-fold cross-validation of the recipe ``base`` repeated with seeds seed..seed+N-1, in order:
    seed S fold k in ``root/[seed-S/]fold-k`` (``root/[seed-S/]run`` for folds 1; root: base's output_dir). Every
    run gets the same split seed (one test split), and seed S's folds the fold seed S (one partition of the pool)."""
    root = Path(base.training.output_dir if root is None else root)
    first, pinned = base.training.seed, split_seed(base.data, base.training.seed)
    runs = []
    for seed in range(first, first + seeds):
        where = root / f"seed-{seed}" if seeds > 1 else root
        extra = ("--seed", str(seed), "--split_seed", str(pinned))  # one test split for every run
        for k in range(folds) if folds > 1 else [None]:
            cv = () if k is None else ("--cv_folds", str(folds), "--cv_fold", str(k), "--cv_seed", str(seed))
            runs.append(FoldRun(seed, k, where / f"fold-{k}" if k is not None else where / "run", extra + cv))
    return tuple(runs)


def headline(m: dict) -> dict:
    """The headline metrics of one run's split (None where a metric does not apply)."""
    return {k: m.get(k) for k in HEADLINE}


def spread(metrics: list[dict]) -> dict:
    """metric -> mean, sd (n-1), min, max over the runs."""
    out = {}
    for key in HEADLINE:
        v = np.array([m[key] for m in metrics if m.get(key) is not None], float)
        if len(v):
            out[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "min": float(v.min()), "max": float(v.max()), "n": len(v)}
    return out


def read_fold_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(paths, labels, probabilities, classes) of a run's predictions CSV: single-label (label ids, as
    report.read_predictions reads it) or multi-label (0/1 rows, from its path,true_<f>...,prob_<f>... form)."""
    import csv

    from hf_medtl.evaluation import report

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0]) if rows else []
    if "label" in header or not rows:  # the single-label form: path,label,predicted,p_<class>...
        return report.read_predictions(path)
    classes = [k[len("prob_"):] for k in header if k.startswith("prob_")]
    table = lambda prefix: np.array([[float(r[prefix + c]) for c in classes] for r in rows]).reshape(  # noqa: E731
        len(rows), len(classes))
    return [r["path"] for r in rows], table("true_"), table("prob_"), classes


def pool_out_of_fold(fold_dirs: list[Path], by_path: bool = False) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """The folds' validation predictions as one set (paths, labels, probabilities, classes): every pool image
    exactly once, or one line saying why not. In fold order, or sorted by path (``by_path``: so that two studies'
    pools line up image by image)."""
    parts = [read_fold_predictions(Path(d) / "predictions_validation.csv") for d in fold_dirs]
    paths = [p for part in parts for p in part[0]]
    twice = sorted(p for p, n in Counter(paths).items() if n > 1)
    if twice or any(part[3] != parts[0][3] for part in parts):
        # (a rerun reruns a fold that finished on other data, so this means folds of different splits)
        raise HfMedtlError(f"{Path(fold_dirs[0]).parent}: its folds do not partition one pool "
                           f"({f'{twice[0]} is held out by two folds' if twice else 'their classes differ'}); "
                           "remove the fold folders and run the study again")
    labels, probs = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    if not by_path:
        return paths, labels, probs, parts[0][3]
    order = np.argsort(paths, kind="stable")
    return [paths[i] for i in order], labels[order], probs[order], parts[0][3]


def score_out_of_fold(fold_dirs: list[Path], csv_path: Path, evaluation, seed: int, by_path: bool = False) -> dict:
    """The folds' pooled validation predictions (pool_out_of_fold) written to ``csv_path`` and scored once, with
    the recipe's ``evaluation`` settings (multi-label: per finding at 0.5; the headline numbers do not depend on
    the thresholds)."""
    from hf_medtl.evaluation import report
    from hf_medtl.evaluation.scoring import score

    paths, labels, probs, classes = pool_out_of_fold(fold_dirs, by_path)
    report.write_predictions(csv_path, paths, labels, probs, classes)
    return score(probs, labels, classes, evaluation, seed)
