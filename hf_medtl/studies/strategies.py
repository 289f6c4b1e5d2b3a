"""`hf-medtl study strategies RECIPE --strategies linear_probe,knn,full,partial,lora`: the MedMNIST+ set of
baselines for one backbone. Each strategy is a normal run of the recipe in ``output_dir/<strategy>`` at the same
settings (linear_probe and knn with augment false: their features must be fixed), so a rerun skips finished ones;
the report tabulates them (test accuracy with CI, F1 macro, ROC-AUC, trainable parameters, epochs, wall time) and
tests every pair on the shared test images (hf_medtl.evaluation.compare.paired, Holm-corrected).

With ``--folds K`` (K > 1) each strategy is K-fold cross-validation on the non-test pool instead
(``output_dir/<strategy>/fold-k``; hf_medtl.studies.crossval's fold runs, one test split and one fold partition
for every strategy), reported as mean ± sd over the folds, and every pair is tested on the folds: a paired t-test
and a Wilcoxon signed-rank test on the folds' test accuracies, and McNemar's exact test on the pooled out-of-fold
validation predictions (each pool image predicted once per strategy), each test Holm-corrected across the pairs."""
from __future__ import annotations

import typing
from itertools import combinations
from pathlib import Path

import numpy as np

from hf_medtl.config.commands import STRATEGIES, StrategiesOptions
from hf_medtl.data.split import split_seed
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.compare import paired, paired_markdown
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.studies.crossval import fold_runs, pool_out_of_fold, score_out_of_fold, spread
from hf_medtl.studies.runs import begin, finish, run_variant

FIXED_FEATURES = ("linear_probe", "knn")  # no augmentation: the backbone's features are computed once


def parse_strategies(text: str) -> list[str]:
    """'linear_probe,knn,full' -> the names, each a finetune_strategy, in order, once each."""
    from hf_medtl.config.arguments import ModelArguments

    known = typing.get_args(typing.get_type_hints(ModelArguments)["finetune_strategy"])
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in known]
    if bad or len(names) < 2:
        raise HfMedtlError(f"--strategies: {f'{bad[0]!r} is not a finetune_strategy' if bad else 'give at least two'}"
                           f"; choose from {', '.join(known)}")
    return names


def variant_overrides(strategy: str) -> list[str]:
    return ["--finetune_strategy", strategy, *(["--augment", "false"] if strategy in FIXED_FEATURES else [])]


def variant_runs(base, names: list[str], folds: int) -> list[tuple[str, int | None, list[str], Path]]:
    """(strategy, fold or None, overrides, run folder) of every run the study makes, in order: what the study
    runs and what a benchmark may run ahead of it, each in a process of its own, for the study to read back. The
    folds of every strategy are hf-medtl cv's (one seed): one test split and one partition of the pool."""
    out = Path(base.training.output_dir)
    if folds == 1:
        return [(name, None, variant_overrides(name), out / name) for name in names]
    return [(name, r.fold, [*variant_overrides(name), *r.extra], r.dir)
            for name in names for r in fold_runs(base, folds, 1, out / name)]


def _refuse_own_folds(base, argv: list[str], folds: int) -> None:
    """--folds K makes the folds itself: a cv key of the recipe or its overrides would fight it (one line, exit 2)."""
    keys = [a.lstrip("-").split("=")[0] for a in argv if a.startswith("--")]
    given = [k for k in keys if k in ("cv_folds", "cv_fold", "cv_seed")]
    if folds > 1 and (given or base.data.cv_folds is not None):
        raise HfMedtlError(f"--folds {folds} cuts the folds itself; drop {given[0] if given else 'cv_folds'} from the "
                           "recipe or its overrides (or use --folds 1 to run the recipe's own fold once per strategy)")


def _row(strategy: str, run_dir: Path, metrics: dict) -> dict:
    test = metrics["test"]
    phases = metrics.get("trainable_parameters") or []
    return {"strategy": strategy, "dir": str(run_dir), "accuracy": test["accuracy"],
            "accuracy_ci": test.get("ci", {}).get("accuracy"), "f1_macro": test["f1_macro"],
            "roc_auc": test.get("roc_auc"), "trainable_parameters": max((p["trainable_params"] for p in phases), default=0),
            "total_parameters": metrics.get("total_parameters"), "epochs": metrics["epochs_run"],
            "train_runtime_s": metrics["train_runtime_s"], "knn": metrics.get("knn"),
            # (absent from runs that finished before training/memory.py existed)
            "peak_memory_mb": metrics.get("peak_memory_mb"), "memory": metrics.get("memory"),
            "seconds_per_epoch": metrics.get("seconds_per_epoch")}


def run_strategies(recipe_path: str | Path, argv: list[str], strategies: str = StrategiesOptions.strategies,
                   folds: int = StrategiesOptions.folds) -> dict:
    """Each strategy as a variant of the recipe (K folds each when folds > 1); report.md + summary.json (one row
    per strategy, paired tests)."""
    from hf_medtl.config.recipe import load_recipe

    names = parse_strategies(strategies)
    base = load_recipe(recipe_path, argv)
    _refuse_own_folds(base, argv, folds)
    runs = variant_runs(base, names, folds)
    for _, k, extra, _ in runs:  # every variant's recipe checked before any of them trains (knn refuses multi-label)
        if not k:  # (fold 0 checks its strategy's other folds too: they differ only in cv_fold)
            load_recipe(recipe_path, [*argv, *extra])
    out = Path(base.training.output_dir)
    staging = begin(out)
    results = [(name, run_dir, run_variant(recipe_path, argv, extra, run_dir)) for name, _, extra, run_dir in runs]
    summary = {"recipe": str(recipe_path), "output_dir": str(out), "model": base.model.model_name_or_path,
               "folds": folds}
    if folds == 1:
        rows = [_row(name, run_dir, metrics) for name, run_dir, metrics in results]
        tests = paired([out / name for name in names], base.evaluation.n_bootstrap, base.training.seed)
        summary |= {"strategies": rows, "paired": tests}
        finish(staging, out, summary, markdown(summary))
    else:
        rows = [_cv_row(name, out, [(d, m) for n, d, m in results if n == name], base, staging) for name in names]
        summary |= {"cv_seed": base.training.seed, "split_seed": split_seed(base.data, base.training.seed),
                    "strategies": rows, "paired": fold_tests(rows, out)}
        finish(staging, out, summary, cv_markdown(summary))
    return summary


def _cv_row(name: str, out: Path, folds: list[tuple[Path, dict]], base, staging: Path) -> dict:
    """One strategy over its folds: each fold's row, mean ± sd of the test metrics, the cost columns averaged,
    and its pooled out-of-fold validation predictions (written beside the report, scored once)."""
    per_fold = [_row(name, d, m) for d, m in folds]
    mean = lambda key: _mean([r[key] for r in per_fold])  # noqa: E731
    oof = score_out_of_fold([d for d, _ in folds], staging / f"predictions_out_of_fold_{name}.csv", base.evaluation,
                            base.training.seed, by_path=True)  # sorted by path: the strategies line up image by image
    return {"strategy": name, "dir": str(out / name), "folds": per_fold, "test": spread([m["test"] for _, m in folds]),
            "trainable_parameters": max(r["trainable_parameters"] for r in per_fold),
            "total_parameters": per_fold[0]["total_parameters"], "peak_memory_mb": mean("peak_memory_mb"),
            # On CPU the peak is the process's RSS; its rise over the RSS at train begin is the run's own share.
            "peak_memory_rise_mb": _mean([r["memory"]["peak_mb"] - r["memory"]["start_mb"] if r["memory"] else None
                                          for r in per_fold]),
            "seconds_per_epoch": mean("seconds_per_epoch"), "epochs": mean("epochs"),
            "train_runtime_s": sum(r["train_runtime_s"] for r in per_fold),
            "out_of_fold": {"n": oof["n"], "accuracy": oof["accuracy"], "f1_macro": oof["f1_macro"],
                            "roc_auc": oof.get("roc_auc"), "ci": oof.get("ci", {})}}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def fold_tests(rows: list[dict], out: Path) -> list[dict]:
    """Every pair of strategies: paired t-test and Wilcoxon signed-rank on the folds' test accuracies (fold k of
    one strategy against fold k of the other: the same training and validation images), McNemar exact on the
    pooled out-of-fold predictions (the same pool images); each test's p-values Holm-corrected across the pairs.
    With K folds the exact Wilcoxon test cannot go below 2 / 2^K (0.0625 for 5 folds): it cannot reject at 0.05
    (scipy's normal approximation, used when differences tie, can)."""
    import warnings

    from scipy import stats as sp

    from hf_medtl.evaluation.stats import holm, mcnemar_exact

    correct = {}
    for r in rows:
        paths, labels, probs, _ = pool_out_of_fold([Path(f["dir"]) for f in r["folds"]], by_path=True)
        correct[r["strategy"]] = (paths, probs.argmax(1) == labels)
    tests = []
    for a, b in combinations(rows, 2):
        acc_a, acc_b = [f["accuracy"] for f in a["folds"]], [f["accuracy"] for f in b["folds"]]
        (paths_a, right_a), (paths_b, right_b) = correct[a["strategy"]], correct[b["strategy"]]
        if paths_a != paths_b:
            raise HfMedtlError(f"{out}: {a['strategy']} and {b['strategy']} held out different pool images; remove "
                               "their fold folders and run the study again")
        with warnings.catch_warnings():  # (identical accuracies: scipy warns and gives nan, read as p = 1 below)
            warnings.simplefilter("ignore")
            t = sp.ttest_rel(acc_a, acc_b).pvalue
            w = sp.wilcoxon(acc_a, acc_b).pvalue if np.any(np.subtract(acc_a, acc_b)) else 1.0
        m = mcnemar_exact(right_a, right_b)
        tests.append({"run_a": a["strategy"], "run_b": b["strategy"], "accuracy_a": a["test"]["accuracy"]["mean"],
                      "accuracy_b": b["test"]["accuracy"]["mean"],
                      "difference": float(np.mean(np.subtract(acc_a, acc_b))),
                      "t_test_p": 1.0 if np.isnan(t) else float(t), "wilcoxon_p": 1.0 if np.isnan(w) else float(w),
                      "out_of_fold_accuracy_a": float(right_a.mean()), "out_of_fold_accuracy_b": float(right_b.mean()),
                      "mcnemar": m, "mcnemar_p": m["p_value"]})
    for key in ("t_test_p", "wilcoxon_p", "mcnemar_p"):
        for t, adjusted in zip(tests, holm([t[key] for t in tests])):
            t[f"{key}_holm"] = adjusted
    return tests


def markdown(s: dict) -> str:
    lines = [f"# Strategies study: {s['recipe']}", "", f"Backbone `{s['model']}`; every strategy a run of the same "
             "recipe (linear_probe and knn without augmentation), scored on the same test images.", "",
             "| strategy | test accuracy (95% CI) | F1 macro | ROC-AUC | trainable parameters | peak memory (MB) | "
             "s/epoch | epochs | wall time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in s["strategies"]:
        ci = r["accuracy_ci"]
        knn = f" (k {r['knn']['k']}, {r['knn']['metric']})" if r["knn"] else ""
        lines.append(f"| {r['strategy']}{knn} | {fmt('a', r['accuracy'])}"
                     f"{f' ({fmt(None, ci[0])} – {fmt(None, ci[1])})' if ci else ''} | {fmt('f1', r['f1_macro'])} | "
                     f"{fmt('auc', r['roc_auc']) if r['roc_auc'] is not None else '–'} | "
                     f"{r['trainable_parameters']:,} of {r['total_parameters']:,} | {_num(r['peak_memory_mb'], 0)} | "
                     f"{_num(r['seconds_per_epoch'], 2)} | {r['epochs']} | {r['train_runtime_s']:.1f} |")
    paired_part = paired_markdown(s["paired"]) if s["paired"] else "No pair of runs shares its test images.\n"
    return "\n".join(lines + ["", paired_part])


def _num(value, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pm(spread: dict, key: str) -> str:
    return f"{fmt(key, spread[key]['mean'])} ± {fmt(key, spread[key]['sd'])}" if key in spread else "–"


def _p(t: dict, key: str) -> str:
    return f"{t[key]:.4f} ({t[key + '_holm']:.4f})"


def cv_markdown(s: dict) -> str:
    k = s["folds"]
    memory = next((f["memory"]["kind"] for r in s["strategies"] for f in r["folds"] if f["memory"]), None)
    lines = [f"# Strategies study: {s['recipe']}, {k}-fold cross-validation", "",
             f"Backbone `{s['model']}`; every strategy a run of the same recipe (linear_probe and knn without "
             f"augmentation) on the same {k} folds of the non-test pool (fold seed {s['cv_seed']}), every fold scored "
             f"on the same test images (split seed {s['split_seed']}). Test metrics: mean ± sd over the folds; peak "
             f"memory ({memory or 'not measured'}; its rise over the value at train begin in brackets), seconds per "
             "epoch and epochs: means over the folds; out-of-fold: the folds' validation predictions pooled.", "",
             "| strategy | test accuracy | F1 macro | ROC-AUC | out-of-fold accuracy | trainable parameters | "
             "peak memory (MB) | s/epoch | epochs |", "|---|---|---|---|---|---|---|---|---|"]
    for r in s["strategies"]:
        ks = sorted({f["knn"]["k"] for f in r["folds"] if f["knn"]})
        knn = f" (k {', '.join(map(str, ks))})" if ks else ""
        rise = f" (+{r['peak_memory_rise_mb']:,.0f})" if r["peak_memory_rise_mb"] is not None else ""
        lines.append(f"| {r['strategy']}{knn} | {_pm(r['test'], 'accuracy')} | {_pm(r['test'], 'f1_macro')} | "
                     f"{_pm(r['test'], 'roc_auc')} | {fmt('accuracy', r['out_of_fold']['accuracy'])} | "
                     f"{r['trainable_parameters']:,} of {r['total_parameters']:,} | "
                     f"{_num(r['peak_memory_mb'], 0)}{rise} | {_num(r['seconds_per_epoch'], 2)} | {r['epochs']:g} |")
    lines += ["", f"Paired tests of every pair (A − B: mean difference of the folds' test accuracies). p (Holm across "
              f"the {len(s['paired'])} pairs, per test): paired t-test and Wilcoxon signed-rank on the {k} folds' test "
              f"accuracies (with {k} folds the exact Wilcoxon p cannot go below {2 / 2 ** k:.4f}), McNemar exact on "
              "the pooled out-of-fold predictions.", "",
              "| A | B | A − B (test, pp) | t-test p (Holm) | Wilcoxon p (Holm) | out-of-fold A / B | McNemar p (Holm) "
              "| differs at 0.05 (Holm) |", "|---|---|---|---|---|---|---|---|"]
    for t in s["paired"]:
        which = [name for name, key in (("t", "t_test_p"), ("Wilcoxon", "wilcoxon_p"), ("McNemar", "mcnemar_p"))
                 if t[key + "_holm"] < 0.05]
        lines.append(f"| {t['run_a']} | {t['run_b']} | {100 * t['difference']:+.2f} | {_p(t, 't_test_p')} | "
                     f"{_p(t, 'wilcoxon_p')} | {fmt('accuracy', t['out_of_fold_accuracy_a'])} / "
                     f"{fmt('accuracy', t['out_of_fold_accuracy_b'])} | {_p(t, 'mcnemar_p')} | "
                     f"{', '.join(which) or 'no'} |")
    return "\n".join(lines + [""])
