"""Fine-tune a pretrained backbone on a medical image dataset, as a JSON recipe says.

    accelerate launch hf_medtl/finetune.py recipes/brain_densenet.json [--key value ...]

recipe -> data split -> backbone -> Trainer with the adaptive schedule -> test metrics -> saved model.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (accelerate launch hf_medtl/finetune.py): import the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from hf_medtl.console import run_command, setup_logging  # noqa: E402
from hf_medtl.config.recipe import load_recipe, require_model  # noqa: E402

logger = logging.getLogger("hf_medtl")


def run(recipe) -> dict:
    """Run one recipe end to end; return its metrics (the summary, validation and test). Every process runs this;
    the main one writes. Each stage is timed (hf_medtl/timings.py): metrics.json's "timings"."""
    from hf_medtl import timings

    with timings.command():
        if recipe.study.ensemble_seeds > 1:
            return run_seed_ensemble(recipe)
        with timings.phase("startup"):
            from hf_medtl import outputs, stages

        # The run owns output_dir from before any data is read until it has committed or failed: a second run into
        # it is refused instead of mixing its files with this one's. Rank 0 holds the lock for every rank.
        with outputs.run_lock(recipe.training.output_dir, take=recipe.training.process_index == 0):
            with timings.phase("data"):  # (the image cache and the model load are phases of their own inside)
                state = stages.prepare(recipe)  # output folder, checked split, backbone with a new head, datasets
            with timings.phase("train_setup"):  # (the epochs are phases of their own: training/progress.py)
                stages.train(state)  # the Trainer with the adaptive schedule; the model ends holding θ*
            with timings.phase("scoring"):
                predictions = stages.predict(state)  # θ* on validation and test, with the recipe's TTA
                results = stages.score(state, predictions)  # with the recipe's TTA, and the model alone
            metrics = {**stages.summary(state), **results}
            with timings.phase("save"):  # (report and card inside are phases of their own)
                stages.save(state, metrics, predictions)  # metrics.json last: its presence means a complete run
        return metrics


def run_seed_ensemble(recipe) -> dict:
    """``ensemble_seeds: N``: N runs of the recipe on one split (output_dir/members/seed-S; a rerun skips finished
    ones), saved in output_dir as one model that averages them (hf_medtl/studies/ensemble.py)."""
    from hf_medtl import outputs
    from hf_medtl.studies import ensemble
    from hf_medtl.studies.reuse import finished

    members = ensemble.seed_members(recipe)
    with outputs.run_lock(recipe.training.output_dir, take=recipe.training.process_index == 0):
        outputs.ensure_writable(recipe.training.output_dir)
        done = [finished(m, m.training.output_dir) or run(m) for m in members]
        return ensemble.save_seed_ensemble(recipe, members, done)


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
    from hf_medtl.cli.common import FINETUNE_DESCRIPTION, parse_standalone

    parsed = parse_standalone("finetune.py", FINETUNE_DESCRIPTION, sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):  # --help or a usage error, already printed
        return parsed
    args, overrides = parsed
    from hf_medtl import timings

    clock = timings.start()  # start-up so far (interpreter, imports) counts from the process's start

    def go() -> int:
        with clock.phase("startup"):  # the recipe read and checked
            setup_logging()
            recipe = load_recipe(args.recipe, overrides)
            require_model(recipe, args.recipe)
        from hf_medtl.training.interrupt import TrainingInterrupted

        try:
            metrics = run(recipe)
        except TrainingInterrupted as e:  # Ctrl-C / SIGTERM: the epoch was saved; say how to go on from it
            if recipe.training.process_index == 0:
                print(f"error: {e}; resume with: {_resume_command(args.recipe, overrides)}", file=sys.stderr)
            return 130
        if recipe.training.process_index != 0:
            return 0
        test = metrics["test"]
        for split, classes in metrics.get("absent_classes", {}).items():  # allow_missing_classes: said first
            print(f"WARNING: NOT EVERY CLASS IS SCORED: the {split} split has no image of {', '.join(classes)}")
        ci = test.get("ci", {}).get("accuracy")
        print(f"test accuracy {test['accuracy']:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "") +
              f", F1 macro {test['f1_macro']:.4f}; {metrics['epochs_run']} epochs, {metrics['lr_reductions']} LR "
              f"reductions; outputs in {recipe.training.output_dir}")
        print(timings.row(clock.snapshot()))  # the whole run's, to this line (metrics.json's stop before its write)
        return 0

    try:
        return run_command(go)
    finally:
        timings.stop()  # this command's clock ends with it (a later command in the process starts its own)


if __name__ == "__main__":
    sys.exit(main())
