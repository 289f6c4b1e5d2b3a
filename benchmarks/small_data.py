"""The toolkit's defaults on small and larger data: the NEW defaults (a recipe with only a data source, class
names, a backbone and an input size: what a user gets: the 1,000-step budget and flip TTA inside the saved model)
against the CURRENT defaults before them (the same recipe with the epoch count given, so no step budget: 10
epochs, and no TTA) and against the transformers example recipe at that budget, on the three shared datasets,
with paired tests. ``--decompose``: also the new defaults without TTA (the budget's share and TTA's); ``--arms ema,swa``: also the
new defaults with weight averaging (EMA of the weights, SWA over the last 5 epochs), each against them. One command:

    python benchmarks/small_data.py [--datasets breastmnist,pneumoniamnist,brain_mri] [--seeds 1,2,3]
        [--ensemble N] [--decompose] [--arms ema,swa] [--model_name_or_path checkpoints/efficientnet_lite0]

Protocols (benchmarks/recipes_vs_example.py does the folds, the runs and the example recipe):
- BreastMNIST: 5-fold grouped stratified cv on train + val, per seed (15 runs per arm with 3 seeds).
- PneumoniaMNIST: its official validation split is the test set; train/validation 85/15 of its train split, per seed.
- Brain MRI (Kaggle Training part): one grouped 80/20 split per seed.
Per dataset: results under benchmarks/results/small_data/<dataset>/{current,new}/results.jsonl (a rerun skips
finished rows), and the comparisons in benchmarks/results/small_data/summary.{md,json}: mean ± sd, wins, paired
t-test and Wilcoxon over runs, McNemar's exact test on each seed's held-out predictions. ``--ensemble N``: also the
new defaults with ``ensemble_seeds: N`` on the first seed's first split, with the ensemble's gain over its best
member (paired bootstrap CI).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipes_vs_example as rve  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASETS = {  # recipe (data, classes, input size only) and protocol flags of recipes_vs_example.py
    "breastmnist": ("recipes/breastmnist_default.json", ["--folds", "5"]),
    "pneumoniamnist": ("recipes/pneumoniamnist_default.json", ["--official_val_as_test"]),
    "brain_mri": ("recipes/brain_mri_default.json", ["--folds", "5", "--fold_subset", "0"]),
}
CURRENT = ["--num_train_epochs", "10", "--tta", "none"]  # the defaults before: the epoch count, no step budget, no TTA
BUDGET_ONLY = ["--tta", "none"]  # the new defaults without TTA: the step budget's share
# Candidate additions to the new defaults, each compared with them run by run (``--arms``): weight averaging.
CANDIDATES = {"ema": ["--ema_decay", "0.999"], "swa": ["--swa_epochs", "5"]}


def paired(rows_a: list[dict], rows_b: list[dict], side_b: str = "recipe") -> dict:
    """rve.summarise of arm A (its recipe side) against arm B's ``side_b`` ('recipe' or 'example'), run by run."""
    by_key = {(r["seed"], r["fold"]): r for r in rows_b}
    rows = []
    for a in rows_a:
        b = by_key.get((a["seed"], a["fold"]))
        if b is None or f"{side_b}_accuracy" not in b:
            continue
        rows.append({**{k: v for k, v in a.items() if k.startswith("recipe_")}, "seed": a["seed"], "fold": a["fold"],
                     **{"example_" + k[len(side_b) + 1:]: v for k, v in b.items() if k.startswith(side_b + "_")}})
    return rve.summarise(rows, {}) if rows else {}


def line(dataset: str, name: str, s: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    if not s:
        return f"| {dataset} | {name} | not run | | | | |"
    mc = ", ".join(f"{m['p_value']:.3f}" for m in s["mcnemar"].values())
    tests = (f"{s['paired_t']['p_value']:.3g} / {s['wilcoxon']['p_value']:.3g}" if "paired_t" in s else "n/a")
    d = s["difference"]
    return (f"| {dataset} | {name} | {pct(s['recipe_accuracy']['mean'])} ± {pct(s['recipe_accuracy']['sd'])} | "
            f"{pct(s['example_accuracy']['mean'])} ± {pct(s['example_accuracy']['sd'])} | {pct(d['mean'])} "
            f"({d['wins']}/{d['ties']}/{d['losses']}) | {tests} | {mc} |")


COMPARISONS = [("new_vs_current", "new vs current defaults"), ("new_vs_example", "new defaults vs example"),
               ("current_vs_example", "current defaults vs example"),
               ("budget_only_vs_current", "step budget alone vs current"),
               ("new_vs_budget_only", "new (budget + flip TTA) vs budget alone"),
               *[(f"{c}_vs_new", f"new + {c} ({' '.join(flags)}) vs new") for c, flags in CANDIDATES.items()]]


def table(summary: dict) -> list[str]:
    """summary.md: every comparison of every dataset, then each dataset's ensemble row."""
    md = ["| dataset | comparison | A: accuracy % (mean ± sd) | B: accuracy % | A − B points (W/T/L) | paired t / "
          "Wilcoxon p | McNemar p per seed |", "|---|---|---|---|---|---|---|"]
    md += [line(name, label, s[key]) for name, s in summary.items() for key, label in COMPARISONS if key in s]
    for name, s in summary.items():
        if "ensemble" in s:
            e, g = s["ensemble"], s["ensemble"]["gain_over_best_member"]
            md.append(f"\n{name}: ensemble of {e['members']} (seed {e['seed']}, first split): accuracy "
                      f"{100 * e['accuracy']:.2f}%, members {', '.join(f'{100 * x:.1f}' for x in e['member_accuracies'])}%; "
                      f"gain over the best member {100 * g['difference']:+.2f} points (95% CI {100 * g['ci'][0]:+.2f} to "
                      f"{100 * g['ci'][1]:+.2f}).")
    return md


def ensemble_row(recipe: str, flags: list[str], n: int, seed: int, overrides: list[str], out: Path) -> dict:
    """The new defaults with ensemble_seeds n on the seed's first split (recipes_vs_example's fold 0)."""
    a = argparse.Namespace(folds=int(flags[flags.index("--folds") + 1]) if "--folds" in flags else 5,
                           official_val_as_test="--official_val_as_test" in flags, recipe_only=True, work=out,
                           recipe=recipe)
    from hf_medtl.config.recipe import load_recipe

    base = load_recipe(recipe, overrides)
    pool = rve.pool_of(base, None, seed)
    row = rve.run_one(a, base, [*overrides, "--ensemble_seeds", str(n)], *pool, seed, 0)
    metrics = json.loads((out / f"seed-{seed}" / "fold-0" / "recipe" / "metrics.json").read_text())
    e = metrics["ensemble"]
    return {"seed": seed, "members": n, "accuracy": row["recipe_accuracy"],
            "member_accuracies": [m["test"]["accuracy"] for m in e["members"]],
            "gain_over_best_member": e["gain_over_best_member"], "train_s": metrics["train_runtime_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--ensemble", type=int, default=0, help="also the new defaults with ensemble_seeds N (0: no)")
    p.add_argument("--decompose", action="store_true", help="also the new defaults without TTA (arm budget_only)")
    p.add_argument("--arms", default="", help=f"also these candidates on top of the new defaults, each against them: "
                   f"comma-separated of {sorted(CANDIDATES)}")
    p.add_argument("--results", default=str(HERE / "results" / "small_data"))
    p.add_argument("--work", default="outputs/small_data")
    a, overrides = p.parse_known_args(argv)
    results, summary = Path(a.results), {}
    for name in a.datasets.split(","):
        recipe, flags = DATASETS[name]
        recipe = str(HERE / recipe)
        common = ["--seeds", a.seeds, *flags, *overrides]
        rve.main([recipe, *common, *CURRENT, "--results", str(results / name / "current"),
                  "--work", f"{a.work}/{name}/current"])
        rve.main([recipe, *common, "--recipe_only", "--results", str(results / name / "new"),
                  "--work", f"{a.work}/{name}/new"])
        arms = ["current", "new"]
        if a.decompose:
            rve.main([recipe, *common, *BUDGET_ONLY, "--recipe_only", "--results", str(results / name / "budget_only"),
                      "--work", f"{a.work}/{name}/budget_only"])
        candidates = [c for c in a.arms.split(",") if c]
        for c in candidates:
            rve.main([recipe, *common, *CANDIDATES[c], "--recipe_only", "--results", str(results / name / c),
                      "--work", f"{a.work}/{name}/{c}"])
        if (results / name / "budget_only" / "results.jsonl").is_file():
            arms.append("budget_only")
        arms += [c for c in CANDIDATES if (results / name / c / "results.jsonl").is_file()]
        rows = {arm: [json.loads(x) for x in (results / name / arm / "results.jsonl").read_text().splitlines()]
                for arm in arms}
        seeds = {int(s) for s in a.seeds.split(",")}
        rows = {arm: [r for r in rs if r["seed"] in seeds] for arm, rs in rows.items()}
        summary[name] = {"new_vs_current": paired(rows["new"], rows["current"]),
                         "new_vs_example": paired(rows["new"], rows["current"], "example"),
                         "current_vs_example": paired(rows["current"], rows["current"], "example"),
                         **({"budget_only_vs_current": paired(rows["budget_only"], rows["current"]),
                             "new_vs_budget_only": paired(rows["new"], rows["budget_only"])} if "budget_only" in rows else {}),
                         **{f"{c}_vs_new": paired(rows[c], rows["new"]) for c in CANDIDATES if c in rows},
                         "new_epochs_run": [r["recipe_epochs_run"] for r in rows["new"]],
                         "new_train_s": [r["recipe_train_s"] for r in rows["new"]]}
        if a.ensemble > 1:
            first = sorted(seeds)[0]
            summary[name]["ensemble"] = ensemble_row(recipe, flags, a.ensemble, first, overrides,
                                                     Path(a.work) / name / f"ensemble{a.ensemble}")
    # Datasets not run this time keep their last summary (and the ensemble row, unless recomputed).
    results.mkdir(parents=True, exist_ok=True)
    previous = json.loads((results / "summary.json").read_text()) if (results / "summary.json").is_file() else {}
    for name, entry in summary.items():
        if "ensemble" in previous.get(name, {}):
            entry.setdefault("ensemble", previous[name]["ensemble"])
    summary = {**previous, **summary}
    md = table(summary)
    (results / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (results / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
