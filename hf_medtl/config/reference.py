"""The recipe reference, built from the argument dataclasses' own defaults and help text: as Markdown for the
docs/recipes.md, and as plain text for the recipe commands' --help. It imports transformers (the training group), so the
command line loads it only when --help is asked."""
from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from typing import Iterator

from hf_medtl.config.training_arguments import GROUPS

TRAINING_MARKDOWN = ("**TrainingArguments** (any field of `transformers.TrainingArguments`; these defaults differ from "
                     "transformers')")
TRAINING_TEXT = ("TrainingArguments: any field of transformers.TrainingArguments is accepted as a key; these are the "
                 "ones whose defaults hf_medtl changes")


def rows() -> Iterator[tuple[str, type, list[tuple[str, str, str]]]]:
    """(group, class, [(key, default as JSON, help)]) per group; of the training group only the fields hf_medtl
    declares itself (transformers documents the rest)."""
    for group, cls in GROUPS.items():
        declared = cls.__dict__["__annotations__"]
        own = [f for f in dataclasses.fields(cls) if group != "training" or f.name in declared]
        keys = []
        for f in own:
            default = f.default_factory() if f.default is dataclasses.MISSING else getattr(f.default, "value", f.default)
            keys.append((f.name, json.dumps(default), f.metadata["help"]))
        yield group, cls, keys


def reference_markdown() -> str:
    """docs/recipes.md: one table per group."""
    lines = []
    for group, cls, keys in rows():
        title = f"**{cls.__name__}**" if group != "training" else TRAINING_MARKDOWN
        lines += ["", title, "", "| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{name}` | `{default}` | {text} |" for name, default, text in keys]
    return "\n".join(lines) + "\n"


def reference_text(width: int | None = None) -> str:
    """The recipe keys as plain text (key = default, then the help indented), grouped, wrapped to the terminal."""
    width = width or max(60, min(120, shutil.get_terminal_size().columns - 2))
    lines = ["recipe keys (set in RECIPE, or as --key value after it; key = default):"]
    for group, cls, keys in rows():
        title = cls.__name__ if group != "training" else TRAINING_TEXT
        lines += [""] + textwrap.wrap(f"{title}:", width, subsequent_indent="  ")
        for name, default, text in keys:
            lines.append(f"  {name} = {default}")
            lines += textwrap.wrap(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"
