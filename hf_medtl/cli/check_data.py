"""`hf-medtl check-data RECIPE`: decode every image, find duplicates, split, write data_report.json and the
split manifest, without building a model (no backbone needed)."""
from __future__ import annotations

from hf_medtl.cli.common import recipe_parser


def register(subparsers) -> None:
    p = recipe_parser(subparsers, "check-data",
                      help="decode every image, find duplicates, split; write data_report.json",
                      description="Check RECIPE's data without training; --key value overrides as for finetune.")
    p.set_defaults(func=run, passthrough=True)


def run(args, rest) -> int:
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.data import MANIFEST, load_splits, summary_line
    from hf_medtl.data.data_report import class_table
    from hf_medtl.outputs import STAGING, ensure_writable, holds_complete_run, run_lock

    recipe = load_recipe(args.recipe, rest)  # no backbone needed: nothing is built
    # It writes data files into output_dir: not while a run there writes its own (they would disagree).
    with run_lock(recipe.training.output_dir) as out:
        # A finished run's folder keeps its own, consistent data files; this check goes beside them.
        write_dir = ensure_writable(out / STAGING) if holds_complete_run(out) else out
        splits = load_splits(recipe.data, recipe.training.seed, out, write_dir=write_dir)
        splits.write_manifest(write_dir / MANIFEST)
    print(summary_line(splits) + "\n" + class_table(splits)
          + f"\nwrote {write_dir / 'data_report.json'} and {write_dir / MANIFEST}")
    return 0
