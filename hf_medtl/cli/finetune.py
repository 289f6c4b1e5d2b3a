"""`hf-medtl finetune RECIPE [--key value ...]`: split, fine-tune, evaluate, save. The body is hf_medtl/finetune.py's
main, which also runs on its own (`accelerate launch hf_medtl/finetune.py RECIPE ...`) with the same parser."""
from __future__ import annotations

from hf_medtl.cli.common import FINETUNE_DESCRIPTION, FINETUNE_HELP, recipe_parser


def register(subparsers) -> None:
    p = recipe_parser(subparsers, "finetune", help=FINETUNE_HELP, description=FINETUNE_DESCRIPTION)
    p.set_defaults(func=run, passthrough=True)


def run(args, rest) -> int:
    from hf_medtl.finetune import main

    return main([args.recipe, *rest])  # parsed again there (cheap): the script form has no other way in
