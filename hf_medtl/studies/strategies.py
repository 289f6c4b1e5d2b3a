"""`hf-medtl study strategies RECIPE --strategies linear_probe,knn,full,partial,lora`: the MedMNIST+ set of
baselines for one backbone. Each strategy is a normal run of the recipe in ``output_dir/<strategy>`` at the same
settings (linear_probe and knn with augment false: their features must be fixed), so a rerun skips finished ones;
the report tabulates them (test accuracy with CI, F1 macro, ROC-AUC, trainable parameters, epochs, wall time) and
tests every pair on the shared test images (hf_medtl.evaluation.compare.paired, Holm-corrected)."""
from __future__ import annotations

import typing
from pathlib import Path

from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.compare import paired, paired_markdown
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.studies.runs import begin, finish, run_variant

STRATEGIES = ("linear_probe", "knn", "full", "partial", "lora")
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


def _row(strategy: str, run_dir: Path, metrics: dict) -> dict:
    test = metrics["test"]
    phases = metrics.get("trainable_parameters") or []
    return {"strategy": strategy, "dir": str(run_dir), "accuracy": test["accuracy"],
            "accuracy_ci": test.get("ci", {}).get("accuracy"), "f1_macro": test["f1_macro"],
            "roc_auc": test.get("roc_auc"), "trainable_parameters": max((p["trainable_params"] for p in phases), default=0),
            "total_parameters": metrics.get("total_parameters"), "epochs": metrics["epochs_run"],
            "train_runtime_s": metrics["train_runtime_s"], "knn": metrics.get("knn")}


def run_strategies(recipe_path: str | Path, argv: list[str], strategies: str = ",".join(STRATEGIES)) -> dict:
    """Each strategy as a variant of the recipe; report.md + summary.json (one row per strategy, paired tests)."""
    from hf_medtl.config.recipe import load_recipe

    names = parse_strategies(strategies)
    base = load_recipe(recipe_path, argv)
    for name in names:  # every variant's recipe checked before any of them trains (knn refuses multi-label data)
        load_recipe(recipe_path, [*argv, *variant_overrides(name)])
    out = Path(base.training.output_dir)
    staging = begin(out)
    rows = [_row(name, out / name, run_variant(recipe_path, argv, variant_overrides(name), out / name))
            for name in names]
    tests = paired([out / name for name in names], base.evaluation.n_bootstrap, base.training.seed)
    summary = {"recipe": str(recipe_path), "output_dir": str(out), "model": base.model.model_name_or_path,
               "strategies": rows, "paired": tests}
    finish(staging, out, summary, markdown(summary))
    return summary


def markdown(s: dict) -> str:
    lines = [f"# Strategies study: {s['recipe']}", "", f"Backbone `{s['model']}`; every strategy a run of the same "
             "recipe (linear_probe and knn without augmentation), scored on the same test images.", "",
             "| strategy | test accuracy (95% CI) | F1 macro | ROC-AUC | trainable parameters | epochs | wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in s["strategies"]:
        ci = r["accuracy_ci"]
        knn = f" (k {r['knn']['k']}, {r['knn']['metric']})" if r["knn"] else ""
        lines.append(f"| {r['strategy']}{knn} | {fmt('a', r['accuracy'])}"
                     f"{f' ({fmt(None, ci[0])} – {fmt(None, ci[1])})' if ci else ''} | {fmt('f1', r['f1_macro'])} | "
                     f"{fmt('auc', r['roc_auc']) if r['roc_auc'] is not None else '–'} | "
                     f"{r['trainable_parameters']:,} of {r['total_parameters']:,} | {r['epochs']} | "
                     f"{r['train_runtime_s']:.1f} |")
    paired_part = paired_markdown(s["paired"]) if s["paired"] else "No pair of runs shares its test images.\n"
    return "\n".join(lines + ["", paired_part])
