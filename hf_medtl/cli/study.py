"""`hf-medtl study imbalance|robustness|search|strategies`: the studies around a recipe or a saved model."""
from __future__ import annotations

from pathlib import Path

from hf_medtl.cli.common import model_flags, model_on_data, non_negative, option_flags, positive, recipe_parser
from hf_medtl.config.commands import ImbalanceOptions, RobustnessOptions, SearchOptions, StrategiesOptions

OPTIONS = {"imbalance": ImbalanceOptions, "robustness": RobustnessOptions, "search": SearchOptions,
           "strategies": StrategiesOptions}


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="imbalance, robustness and hyperparameter studies")
    study.set_defaults(func=run)
    sub = study.add_subparsers(dest="study", required=True)
    p = recipe_parser(sub, "imbalance", help="subsample the training split's minority classes; F1 / recall per level",
                      description="Run RECIPE at each imbalance level; --key value overrides apply to every level.")
    option_flags(p, ImbalanceOptions, "levels", "minority")
    p.set_defaults(passthrough=True)
    p = sub.add_parser("robustness", help="score a saved model under graded perturbations")
    model_on_data(p, RobustnessOptions)
    option_flags(p, RobustnessOptions, "perturbations", "severities", "batch_size", "n_bootstrap", "seed",
                 batch_size={"type": positive}, n_bootstrap={"type": non_negative})
    model_flags(p, RobustnessOptions)
    p.set_defaults(passthrough=False)
    p = recipe_parser(sub, "search", help="Optuna search over the recipe's search_space, scored on validation",
                      description="Trainer.hyperparameter_search (Optuna) over search_space; --key value overrides.")
    option_flags(p, SearchOptions, "trials", "storage", "study_name", trials={"type": positive},
                 storage={"metavar": "URL"})
    p.set_defaults(passthrough=True)
    p = recipe_parser(sub, "strategies", help="linear probe, k-NN, full, partial, LoRA on one backbone; paired tests",
                      description="Run RECIPE once per finetune_strategy into output_dir/<strategy> (--folds K: K "
                                  "folds each, output_dir/<strategy>/fold-k); --key value overrides apply to every "
                                  "strategy.")
    option_flags(p, StrategiesOptions, "strategies", "folds", folds={"type": positive})
    p.set_defaults(passthrough=True)


def run(args, rest) -> int:
    return {"imbalance": _imbalance, "robustness": _robustness, "search": _search,
            "strategies": _strategies}[args.study](args, rest)


def _imbalance(args, rest) -> int:
    from hf_medtl.studies import run_imbalance

    s = run_imbalance(args.recipe, rest, args.levels, args.minority)
    print("\n".join(f"{r['level']}: test F1 macro {r['f1_macro']:.4f}" for r in s["levels"]) +
          f"\nreport in {Path(s['output_dir']) / 'report.md'}")
    return 0


def _robustness(args, rest) -> int:
    from hf_medtl.studies import run_robustness

    s = run_robustness(args.model_dir, args.data, args.output_dir, args.split, args.perturbations, args.severities,
                       args.batch_size, args.n_bootstrap, args.seed, args.allow_pickle_weights, args.trust_remote_code)
    worst = min(s["rows"], key=lambda r: r["accuracy"])
    print(f"{s['images']} images, {len(s['rows'])} conditions; lowest accuracy {worst['accuracy']:.4f} "
          f"({worst['perturbation']} severity {worst['severity']}); report in {Path(s['output_dir']) / 'report.md'}")
    return 0


def _search(args, rest) -> int:
    from hf_medtl.studies import run_search

    s = run_search(args.recipe, rest, args.trials, args.storage, args.study_name)
    if not s["complete"]:
        print(f"{s['finished']} of {args.trials} trials finished, {s['running']} still running in other workers; the "
              f"worker that finishes the last one writes the summary in {s['output_dir']}")
        return 0
    print(f"{s['trials']} trials; best validation accuracy {s['best_value']:.4f} with {s['best_params']}; "
          f"re-run: hf-medtl finetune {Path(s['output_dir']) / 'best_recipe.json'}")
    return 0


def _strategies(args, rest) -> int:
    from hf_medtl.studies import run_strategies

    s = run_strategies(args.recipe, rest, args.strategies, args.folds)
    accuracy = (lambda r: f"{r['accuracy']:.4f}") if args.folds == 1 else (
        lambda r: f"{r['test']['accuracy']['mean']:.4f} ± {r['test']['accuracy']['sd']:.4f} over {args.folds} folds")
    print("\n".join(f"{r['strategy']}: test accuracy {accuracy(r)}, {r['trainable_parameters']:,} trainable "
                    f"parameters" for r in s["strategies"]) + f"\nreport in {Path(s['output_dir']) / 'report.md'}")
    return 0
