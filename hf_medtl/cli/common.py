"""Argument helpers shared by the sub-commands. A flag that is also a recipe key takes its default, help text and
choices from the argument dataclass (hf_medtl.config.arguments, light to import), so the two cannot drift apart."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from typing import Literal, Union

from hf_medtl.config.arguments import ModelArguments


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


def field_default(cls: type, name: str):
    """The default of the dataclass field cls.NAME."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def dataclass_flag(parser, cls: type, name: str, **overrides) -> argparse.Action:
    """Add --NAME as the dataclass field cls.NAME declares it: its default, its help text (with the default
    appended), its Literal[...] choices, store_true for a bool that defaults to false (--no_NAME, store_false, for
    one that defaults to true). ``overrides`` are add_argument's keywords, for where a command deliberately differs
    (a stricter type, a metavar)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field_default(cls, name)
    tp = _field_type(cls, name)
    kwargs = {"default": default, "help": field.metadata["help"].replace("%", "%%")}  # argparse %-formats help
    flag = f"--{name}"
    if tp is bool and default is False:
        kwargs["action"] = "store_true"
    elif tp is bool and default is True:
        flag, kwargs["action"], kwargs["dest"] = f"--no_{name}", "store_false", name
    elif typing.get_origin(tp) is Literal:
        kwargs["choices"] = list(typing.get_args(tp))
    elif tp in (int, float, str):
        kwargs["type"] = tp
    kwargs.update(overrides)
    if not any(kwargs["default"] is v for v in (None, False, True)) and "%(default)" not in kwargs["help"]:
        kwargs["help"] += " (default: %(default)s)"
    return parser.add_argument(flag, **kwargs)


def option_flags(parser, cls: type, *names: str, **overrides: dict) -> None:
    """dataclass_flag for each of ``names``; ``overrides``: name -> that flag's add_argument keywords."""
    for name in names:
        dataclass_flag(parser, cls, name, **overrides.get(name, {}))


def options_from(args: argparse.Namespace, cls: type, **given):
    """An options dataclass (hf_medtl.config.commands) from the parsed flags of its fields; ``given``: the fields
    that no flag of their own fills."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}, **given)


def model_flags(p, cls: type = ModelArguments) -> None:
    """The two opt-ins of every command that loads a saved model: pickle weights, and code shipped with it."""
    option_flags(p, cls, "allow_pickle_weights", "trust_remote_code")


MODEL_DIR_HELP = "a finetune run's output_dir (or any saved image classifier)"


def model_on_data(p, cls: type) -> None:
    """The arguments of a command that scores a saved model on data: model_dir, data, and the --output_dir and
    --split of its options ``cls``."""
    p.add_argument("model_dir", help=MODEL_DIR_HELP)
    p.add_argument("data", help="folder of class sub-folders (e.g. a Testing/ folder), a label CSV, or a MedMNIST .npz")
    option_flags(p, cls, "output_dir", "split")


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
