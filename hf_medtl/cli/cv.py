"""`hf-medtl cv RECIPE`: grouped, stratified K-fold cross-validation, repeated over seeds, with a summary; or one of
its runs as an independent job (--fold K --seed S), the finished runs pooled (--collect), the jobs listed (--plan)."""
from __future__ import annotations

from pathlib import Path

from hf_medtl.cli.common import non_negative, option_flags, positive, recipe_parser
from hf_medtl.config.commands import CvOptions

OPTIONS = CvOptions


def register(subparsers) -> None:
    p = recipe_parser(subparsers, "cv", help="K-fold cross-validation and repeated seeds of a recipe, with a summary",
                      description="Grouped, stratified K-fold on the train + validation pool (the test split shared "
                                  "by every fold), repeated with seeds seed..seed+N-1; --key value overrides the "
                                  "recipe. Every run in this process, or one per job: --plan lists the jobs "
                                  "(--fold K --seed S), --collect writes the summary from their finished runs.")
    option_flags(p, OPTIONS, "folds", "seeds", "ensemble", "seed", folds={"type": positive},
                 seeds={"type": positive})
    mode = p.add_mutually_exclusive_group()
    option_flags(mode, OPTIONS, "fold", "collect", "plan", fold={"type": non_negative})
    p.set_defaults(func=run, passthrough=True)


def run(args, rest) -> int:
    from hf_medtl.studies import cv

    if args.fold is not None:
        job, m, main = cv.run_job(args.recipe, rest, args.folds, args.seeds, args.fold, args.seed)
        if main:  # one line per job, not one per process of a multi-GPU launch
            print(f"{job.name()}: test accuracy {m['test']['accuracy']:.4f}; the run is in {job.dir}")
        return 0
    if args.plan:
        print(cv.plan_text(args.recipe, rest, args.folds, args.seeds, args.ensemble, args.seed))
        return 0
    rest = [*rest, *(["--seed", str(args.seed)] if args.seed is not None else [])]
    s = (cv.collect if args.collect else cv.run_cv)(args.recipe, rest, args.folds, args.seeds, args.ensemble)
    acc = s["test"]["accuracy"]
    print(f"{len(s['runs'])} runs: test accuracy {acc['mean']:.4f} ± {acc['sd']:.4f} (range {acc['min']:.4f}-"
          f"{acc['max']:.4f}); summary in {Path(s['output_dir']) / 'report.md'}")
    if "ensemble" in s:
        print(f"ensemble of {len(s['runs'])}: test accuracy {s['ensemble']['test']['accuracy']:.4f}; the model is in "
              f"{s['ensemble']['dir']}")
    return 0
