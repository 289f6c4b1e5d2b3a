"""`hf-medtl cv RECIPE`: grouped, stratified K-fold cross-validation, repeated over seeds, with a summary."""
from __future__ import annotations

from pathlib import Path

from hf_medtl.cli.common import positive, recipe_parser


def register(subparsers) -> None:
    p = recipe_parser(subparsers, "cv", help="K-fold cross-validation and repeated seeds of a recipe, with a summary",
                      description="Grouped, stratified K-fold on the train + validation pool (the test split shared "
                                  "by every fold), repeated with seeds seed..seed+N-1; --key value overrides the "
                                  "recipe.")
    p.add_argument("--folds", type=positive, default=5, help="number of folds (1: the recipe's own split)")
    p.add_argument("--seeds", type=positive, default=1, help="repeat with this many seeds")
    p.add_argument("--ensemble", action="store_true",
                   help="also save the runs' models as ONE model that averages their probabilities, in "
                        "output_dir/ensemble, scored on the shared test split")
    p.set_defaults(func=run, passthrough=True)


def run(args, rest) -> int:
    from hf_medtl.studies import run_cv

    s = run_cv(args.recipe, rest, args.folds, args.seeds, args.ensemble)
    acc = s["test"]["accuracy"]
    print(f"{len(s['runs'])} runs: test accuracy {acc['mean']:.4f} ± {acc['sd']:.4f} (range {acc['min']:.4f}-"
          f"{acc['max']:.4f}); summary in {Path(s['output_dir']) / 'report.md'}")
    if "ensemble" in s:
        print(f"ensemble of {len(s['runs'])}: test accuracy {s['ensemble']['test']['accuracy']:.4f}; the model is in "
              f"{s['ensemble']['dir']}")
    return 0
