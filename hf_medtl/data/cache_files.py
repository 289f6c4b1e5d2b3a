"""Housekeeping of the on-disk caches (images: hf_medtl.data.cache; features: hf_medtl.training.feature_cache):
entries are written to temporary folders named after their writer and renamed when complete; a failed write is
one line naming the folder and the setting that moves it."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from hf_medtl.data.types import DataError


def write_error(e: OSError, what: str, folder, setting: str, off: str) -> DataError:
    """One line for a cache that cannot be written: where, why, and the setting that moves it."""
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)
    reason = "no space left on the device" if full else (getattr(e, "strerror", None) or str(e).splitlines()[0][:120])
    return DataError(f"{what} '{folder}': cannot write there ({reason}); set {setting} to a folder with free space, "
                     f"or {off}")


def remove_abandoned(folder: Path, pattern: str = ".tmp-*", older_than_s: float = 3600) -> None:
    """Temporary folders of writers that are gone: named ``.tmp-<host>-<pid>-...`` by a process of this host that
    no longer runs, or an hour old (another host's writer, a reused pid, an older name)."""
    host = socket.gethostname()
    for tmp in folder.glob(pattern):
        try:
            if not _writer_alive(tmp.name, host) or time.time() - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass


def temporary_name(prefix: str = ".tmp") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def _writer_alive(name: str, host: str) -> bool:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0].endswith(f"-{host}"):
        return True  # not ours to judge: the age rule decides
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def set_aside(entry: Path) -> None:
    """Take a damaged entry out of its cache at once (a rename: readers never see it half removed), then delete it;
    a removal cut short leaves a temporary folder that remove_abandoned deletes later. Gone already (another run
    set it aside): nothing to do."""
    aside = entry.parent / temporary_name(".tmp-damaged")
    try:
        os.replace(entry, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
