"""Outputs appear atomically: a run writes its final files into a staging folder and moves them into
``output_dir`` only when all exist, ``metrics.json`` last, so that its presence means a complete run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from hf_medtl.callbacks import STATE_FILE
from hf_medtl.errors import HfMedtlError

MARKER = "metrics.json"
STAGING = ".staging"


def staging_dir(output_dir: Path) -> Path:
    staging = Path(output_dir) / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, output_dir: Path) -> None:
    """Move every staged file into output_dir; the marker goes first out and last in."""
    output_dir = Path(output_dir)
    (output_dir / MARKER).unlink(missing_ok=True)
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == MARKER)
    for src in files:
        dst = output_dir / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(staging, ignore_errors=True)


def resolve_checkpoint(resume: Optional[str], output_dir: Path) -> Optional[str]:
    """``resume_from_checkpoint``: a checkpoint folder, or "last"/"true" for the newest complete one."""
    if not resume or resume.lower() == "false":
        return None
    if resume.lower() not in ("last", "true"):
        if not (Path(resume) / STATE_FILE).is_file():
            raise HfMedtlError(f"resume_from_checkpoint '{resume}': not a complete hf_medtl checkpoint (no {STATE_FILE})")
        return resume
    complete = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    if not complete:
        raise HfMedtlError(f"resume_from_checkpoint '{resume}': no complete checkpoint in {output_dir}; runs write one "
                           "per epoch with save_strategy 'epoch'")
    return str(max(complete, key=lambda p: int(p.name.split("-")[1])))
