"""Outputs appear atomically: a run writes its final files into a staging folder and moves them into
``output_dir`` only when all exist, ``metrics.json`` last, so that its presence means a complete run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from hf_medtl.errors import HfMedtlError

MARKER = "metrics.json"
STAGING = ".staging"
STATE_FILE = "adaptive_schedule.json"  # written last into a checkpoint: its presence marks the checkpoint complete
BEST_FILE = "adaptive_best.safetensors"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling and rename it over ``path``: readers (other ranks, a later run)
    see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def ensure_writable(output_dir: str | Path, key: str = "output_dir") -> Path:
    """Create ``output_dir`` and prove it takes a file, before any long work whose results would be lost."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise HfMedtlError(f"{key} '{output_dir}': is a file; pass a folder path")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".hf_medtl_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HfMedtlError(f"{key} '{output_dir}': not writable ({e.strerror or type(e).__name__}); "
                           "choose a folder you can write to") from None
    return output_dir


def holds_complete_run(output_dir: str | Path) -> bool:
    return (Path(output_dir) / MARKER).is_file()


def staging_dir(output_dir: Path) -> Path:
    staging = Path(output_dir) / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, output_dir: Path, marker: str = MARKER) -> None:
    """Move every staged file into output_dir; the marker goes first out and last in."""
    output_dir = Path(output_dir)
    (output_dir / marker).unlink(missing_ok=True)
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == marker)
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
