"""Argument helpers shared by the sub-commands (and by hf_medtl/finetune.py's script form). A flag that is also a
recipe key takes its default, help text and choices from the argument dataclass (hf_medtl.config.arguments, light
to import), so the two cannot drift apart."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from typing import Literal, Union

from hf_medtl.config.arguments import ModelArguments

# `hf-medtl finetune`'s texts live here, not in cli/finetune.py, because the script form (hf_medtl/finetune.py, which
# cli/finetune.py runs) builds the same parser and must not import the module that imports it.
FINETUNE_HELP = "run a recipe: split, fine-tune, evaluate, save"
FINETUNE_DESCRIPTION = "Run RECIPE.json; any --key value after it overrides the recipe."


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got '{text}'")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got '{text}'")
    return int(text)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)  # evaluates every annotation of the class: once per class, not per flag


def _field_type(cls: type, name: str):
    """The field's annotation, Optional[...] unwrapped (the flag's default None stands for 'not given')."""
    tp = _hints(cls)[name]
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


def dataclass_flag(parser, cls: type, name: str, **overrides) -> argparse.Action:
    """Add --NAME as the dataclass field cls.NAME declares it: its default, its help text (with the default
    appended), its Literal[...] choices, store_true for a bool that defaults to false. ``overrides`` are
    add_argument's keywords, for where a command deliberately differs (a CLI-only default, a stricter type)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    tp = _field_type(cls, name)
    kwargs = {"default": default, "help": field.metadata["help"].replace("%", "%%")}  # argparse %-formats help
    if tp is bool and default is False:
        kwargs["action"] = "store_true"
    elif typing.get_origin(tp) is Literal:
        kwargs["choices"] = list(typing.get_args(tp))
    elif tp in (int, float, str):
        kwargs["type"] = tp
    kwargs.update(overrides)
    if kwargs["default"] not in (None, False) and "%(default)" not in kwargs["help"]:
        kwargs["help"] += " (default: %(default)s)"
    return parser.add_argument(f"--{name}", **kwargs)


def model_flags(p) -> None:
    """The two opt-ins of every command that loads a saved model: pickle weights, and code shipped with it."""
    dataclass_flag(p, ModelArguments, "allow_pickle_weights")
    dataclass_flag(p, ModelArguments, "trust_remote_code")


def model_on_data(p, suffix: str) -> None:
    """The arguments of a command that scores a saved model on data: model_dir, data, --output_dir, --split."""
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("data", help="folder of class sub-folders (e.g. a Testing/ folder), a label CSV, or a MedMNIST .npz")
    p.add_argument("--output_dir", help=f"where to write (default: <model_dir>_{suffix}_<data name> beside the model)")
    p.add_argument("--split", default="test", help="which split of an .npz (train, val, test; default test)")


class _RecipeHelp(argparse.Action):
    """-h/--help of a command that reads a recipe: the usual help, then every recipe key with its default and help.
    The key list needs transformers (the training group), so it is built only when help is asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from hf_medtl.config.reference import reference_text

        parser.print_help()
        print("\n" + reference_text(), end="")
        parser.exit()


def recipe_parser(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command that runs RECIPE (--key value overrides after it pass through), its help listing the keys.
    No abbreviations: an override that starts like one of the command's own flags (--seed, --fold) must pass
    through as the recipe key it names, not be taken for that flag (--seeds, --folds)."""
    p = subparsers.add_parser(name, add_help=False, allow_abbrev=False, **kwargs)
    add_recipe_arguments(p)
    return p


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-h", "--help", action=_RecipeHelp, help="show this help and every recipe key, then exit")
    p.add_argument("recipe", help="path of a JSON recipe")


def parse_standalone(prog: str, description: str, argv: list[str]) -> tuple[argparse.Namespace, list[str]] | int:
    """A recipe command run as a script: (arguments, the --key value overrides), or the exit code when argparse
    has already answered (--help: 0, a usage error: 2), so that a script's main returns instead of raising."""
    parser = argparse.ArgumentParser(prog=prog, description=description, add_help=False, allow_abbrev=False)
    add_recipe_arguments(parser)
    try:
        return parser.parse_known_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
