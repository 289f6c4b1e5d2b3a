"""`hf-medtl finetune RECIPE [--key value ...]`: split, fine-tune, evaluate, save. ``main`` is also the script form
(hf_medtl/finetune.py: `accelerate launch hf_medtl/finetune.py RECIPE ...`), with the same parser."""
from __future__ import annotations

import sys

from hf_medtl.cli.common import parse_standalone, recipe_parser

HELP = "run a recipe: split, fine-tune, evaluate, save"
DESCRIPTION = "Run RECIPE.json; any --key value after it overrides the recipe."


def register(subparsers) -> None:
    p = recipe_parser(subparsers, "finetune", help=HELP, description=DESCRIPTION)
    p.set_defaults(func=run, passthrough=True)


def run(args, rest) -> int:
    return main([args.recipe, *rest])  # parsed again there (cheap): the script form has no other way in


def run_recipe(recipe) -> dict:
    """A loaded recipe run as this command runs it (hf_medtl.studies.runs.run); its metrics."""
    from hf_medtl.studies.runs import run as run_one

    return run_one(recipe)


def _resume_command(recipe_path: str, overrides: list[str]) -> str:
    """The command that resumes an interrupted run: the same recipe and overrides, from its last checkpoint."""
    import shlex

    kept, skip = [], False
    for a in overrides:
        if skip or a.startswith("--resume_from_checkpoint="):
            skip = False
            continue
        if a == "--resume_from_checkpoint":
            skip = True
            continue
        kept.append(a)
    return f"hf-medtl finetune {shlex.join([recipe_path, *kept])} --resume_from_checkpoint last"


def main(argv: list[str] | None = None) -> int:
    """`hf-medtl finetune`, also as a script (accelerate launch, python -m): the same parser (its --help lists every
    recipe key), then load and check the recipe, run it, and print the test line on the main process."""
    parsed = parse_standalone("finetune.py", DESCRIPTION, sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):  # --help or a usage error, already printed
        return parsed
    args, overrides = parsed
    from hf_medtl import timings
    from hf_medtl.console import run_command

    clock = timings.start()  # start-up so far (interpreter, imports) counts from the process's start

    def go() -> int:
        with clock.phase("startup"):  # the recipe read and checked
            from hf_medtl.config.recipe import load_recipe, require_model
            from hf_medtl.console import setup_logging

            setup_logging()
            recipe = load_recipe(args.recipe, overrides)
            require_model(recipe, args.recipe)
        from hf_medtl.training.interrupt import TrainingInterrupted

        try:
            metrics = run_recipe(recipe)
        except TrainingInterrupted as e:  # Ctrl-C / SIGTERM: the epoch was saved; say how to go on from it
            if recipe.training.process_index == 0:
                print(f"error: {e}; resume with: {_resume_command(args.recipe, overrides)}", file=sys.stderr)
            return 130
        if recipe.training.process_index == 0:
            _print_result(recipe, metrics, clock)
        return 0

    try:
        return run_command(go)
    finally:
        timings.stop()  # this command's clock ends with it (a later command in the process starts its own)


def _print_result(recipe, metrics: dict, clock) -> None:
    """The test line (and its warnings), then the whole run's timings row (metrics.json's stop before its write)."""
    from hf_medtl import timings

    test = metrics["test"]
    for split, classes in metrics.get("absent_classes", {}).items():  # allow_missing_classes: said first
        print(f"WARNING: NOT EVERY CLASS IS SCORED: the {split} split has no image of {', '.join(classes)}")
    ci = test.get("ci", {}).get("accuracy")
    print(f"test accuracy {test['accuracy']:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "") +
          f", F1 macro {test['f1_macro']:.4f}; {metrics['epochs_run']} epochs, {metrics['lr_reductions']} LR "
          f"reductions; outputs in {recipe.training.output_dir}")
    print(timings.row(clock.snapshot()))
