"""`hf-medtl`: one module per sub-command, each with register(subparsers) and run(args, rest). Only the parsers
are built at start-up; a command's run imports what it needs, so `hf-medtl --help` loads neither torch nor
transformers."""
from __future__ import annotations

import argparse
import os
import sys

import hf_medtl
from hf_medtl.cli import app, check_data, compare, convert, cv, evaluate, export, finetune, predict, study
from hf_medtl.console import run_command, setup_logging

COMMANDS = (finetune, check_data, convert, evaluate, predict, export, app, compare, cv, study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-medtl", description="Transfer learning for medical image classification.")
    parser.add_argument("--version", action="version", version=f"hf-medtl {hf_medtl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `hf-medtl finetune --help | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    ns, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and not ns.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command != "finetune":  # finetune sets up its own (it also runs as a script)
        setup_logging()
    return run_command(lambda: ns.func(ns, rest))
