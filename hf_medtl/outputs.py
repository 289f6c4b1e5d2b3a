"""Outputs appear atomically: a run writes its final files into a staging folder and moves them into
``output_dir`` only when all exist, ``metrics.json`` last, so that its presence means a complete run. A run owns
its folder while it lives: a lock file there names its process, and another run into the same folder is refused."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")

MARKER = "metrics.json"
STAGING = ".staging"
STATE_FILE = "adaptive_schedule.json"  # written last into a checkpoint: its presence marks the checkpoint complete
BEST_FILE = "adaptive_best.safetensors"
LOCK = ".hf_medtl.lock"
_HELD: set[str] = set()  # the locks this process holds: its own PID in a lock it does not hold is a dead namesake's


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call: two writers never share one (a fixed
    '.tmp' name let one writer rename the other's half-written file into place)."""
    import secrets

    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling and rename it over ``path``: readers (other ranks, a later run, another
    writer) see the old file or a new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: nothing was created there to remove
    return path


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """safetensors reports a failed write (a full disk, a quota) as its own SafetensorError, with the OS error only
    in its text: turned here into that OSError, naming ``path``, so that the command says it in one line."""
    import errno
    import re

    try:
        yield
    except Exception as e:
        code = re.search(r"os error (\d+)", str(e)) if type(e).__name__ == "SafetensorError" else None
        if code is None:
            raise
        number = int(code.group(1))
        if number in (errno.ENOSPC, errno.EDQUOT):  # console.run_command's full-disk line names the file
            raise OSError(number, os.strerror(number), str(path)) from None
        raise HfMedtlError(f"{path}: cannot be written ({os.strerror(number)})") from None


def check_destination(path: str | Path, flag: str) -> Path:
    """A file the command will write at the end, checked before any work: not a folder, its folder creatable and
    writable (one line naming the flag and why otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise HfMedtlError(f"{flag} '{path}': is a folder; name a file, e.g. {path / 'predictions.csv'}")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise HfMedtlError(f"{flag} {path}: its folder cannot be created ({blocker} is a file, not a folder)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(path)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HfMedtlError(f"{flag} {path}: cannot be written there ({e.strerror or type(e).__name__}); choose a "
                           "folder you can write to") from None
    return path


def ensure_writable(output_dir: str | Path, key: str = "output_dir") -> Path:
    """Create ``output_dir`` and prove it takes a file, before any long work whose results would be lost."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise HfMedtlError(f"{key} '{output_dir}': is a file; pass a folder path")
    blocker = next((p for p in output_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise HfMedtlError(f"{key} '{output_dir}': not writable ({blocker} is a file, not a folder); choose a "
                           "folder you can write to")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(output_dir / ".hf_medtl_write_test")  # unique: concurrent workers probe one folder
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HfMedtlError(f"{key} '{output_dir}': not writable ({e.strerror or type(e).__name__}); "
                           "choose a folder you can write to") from None
    return output_dir


def holds_complete_run(output_dir: str | Path) -> bool:
    return (Path(output_dir) / MARKER).is_file()


def staging_dir(output_dir: Path) -> Path:
    refuse_if_locked(output_dir)  # emptying the staging folder would destroy a live run's staged outputs
    staging = Path(output_dir) / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, output_dir: Path, marker: str = MARKER) -> None:
    """Move every staged file into output_dir; the marker goes first out and last in."""
    output_dir = Path(output_dir)
    refuse_if_locked(output_dir)
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


def check_checkpoint_recipe(checkpoint: str | Path, resolved: dict) -> None:
    """A checkpoint resumes only the recipe that wrote it (its recipe.json, beside the Trainer's state): another
    run's checkpoint (other data, another learning rate...) is refused in one line naming the first difference,
    instead of being trained on (or, when it was that run's last epoch, saved as this one's model). A checkpoint
    written before checkpoints recorded their recipe is resumed with a warning."""
    from hf_medtl.config.recipe import recipe_difference

    saved = Path(checkpoint) / "recipe.json"
    if not saved.is_file():
        logging.getLogger("hf_medtl").warning(f"{checkpoint}: no recipe.json (an older checkpoint); resumed without "
                                              "checking that this recipe wrote it")
        return
    before = json.loads(saved.read_text())
    changed = recipe_difference(before, json.loads(json.dumps(resolved, default=str)), ignore=("output_dir",))
    if changed:
        raise HfMedtlError(f"resume_from_checkpoint: {checkpoint} was written by another recipe ({changed}); resume "
                           "with that recipe, or start afresh (resume_from_checkpoint false, or another output_dir)")


# -- the run lock ------------------------------------------------------------------------------------------------
@contextmanager
def run_lock(output_dir: str | Path, take: bool = True) -> Iterator[Path]:
    """Own ``output_dir`` for the ``with`` body: a lock file holding this process's PID and host, created atomically,
    removed when the body ends however it ends. Another live process's lock there: one line naming it (before any
    data is read). A lock whose process is gone (a killed run) is taken over. ``take=False`` (ranks other than the
    main one, which holds it for them) does nothing: the main process creates the folder and probes it."""
    if not take:
        yield Path(output_dir)
        return
    output_dir = ensure_writable(output_dir)
    lock = output_dir / LOCK
    mine = _acquire(lock)
    try:
        yield output_dir
    finally:
        _HELD.discard(str(lock.resolve()))
        if _read(lock) == mine:  # not another run's lock, should someone have deleted ours by hand
            lock.unlink(missing_ok=True)


def refuse_if_locked(output_dir: str | Path) -> None:
    """Raise when another live process holds ``output_dir``'s lock (writers that do not take it themselves)."""
    lock = Path(output_dir) / LOCK
    if str(lock.resolve()) in _HELD:
        return
    owner = _parse(_read(lock))
    if owner is not None and owner_alive(owner, lock):
        raise HfMedtlError(_in_use(lock, owner))


def _acquire(lock: Path) -> str:
    """Create the lock (O_EXCL: of two processes exactly one succeeds) and return what it holds; a live owner's
    lock refuses, a dead one's is removed and the creation tried again."""
    me = this_process()
    for _ in range(250):  # a bounded wait (5 s) for a lock another process is writing or taking over this instant
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raw = _read(lock)
            owner = _parse(raw)
            if owner is None and raw is not None and _age(lock) < 2:  # created, its owner not yet written
                time.sleep(0.02)
                continue
            if owner is not None and owner_alive(owner, lock):
                raise HfMedtlError(_in_use(lock, owner)) from None
            _remove_stale(lock, raw, owner or {})
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        _HELD.add(str(lock.resolve()))
        return me
    raise HfMedtlError(f"{lock.parent}: could not take its lock {lock}; another hf_medtl process keeps changing it")


def _remove_stale(lock: Path, raw: Optional[str], owner: dict) -> None:
    """Delete a dead owner's lock, one taker at a time (a guard file), and only if it still holds what was judged
    dead: a second taker may have replaced it with its own live lock meanwhile."""
    if raw is None:
        return  # gone already: released, or taken over
    guard = lock.with_name(lock.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        if _age(guard) > 2:  # left by a process killed in the middle of a takeover
            guard.unlink(missing_ok=True)
        time.sleep(0.02)
        return
    try:
        if _read(lock) == raw:
            lock.unlink(missing_ok=True)
            logger.info(f"{lock.parent}: took over the lock of PID {owner.get('pid', '?')} on "
                        f"{owner.get('host') or 'this host'}, which is no longer running")
    finally:
        guard.unlink(missing_ok=True)


def _in_use(lock: Path, owner: dict) -> str:
    host = owner.get("host") or socket.gethostname()
    return (f"output_dir '{lock.parent}' is in use by another hf_medtl run (PID {owner.get('pid')} on {host}); "
            f"wait for it to end or choose another output_dir (if that process is gone, delete {lock})")


def this_process() -> str:
    """This process as a lock names its owner (JSON: pid, host, start ticks, since); owner_alive reads it back."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": _start_ticks(os.getpid()),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _parse(raw: Optional[str]) -> Optional[dict]:
    """The lock's owner: our JSON, or a bare PID (a lock written by hand or by a script); None when empty."""
    if not raw or not raw.strip():
        return None
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = None
    if isinstance(owner, int):
        owner = {"pid": owner}
    return owner if isinstance(owner, dict) else {"pid": None}  # unreadable: no live process it could name


def owner_alive(owner: dict, lock: Path) -> bool:
    """Whether the lock's process still runs. Another host's processes cannot be seen: those count as alive."""
    if owner.get("host") not in (None, socket.gethostname()):
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == os.getpid():  # this process: alive only if it took this lock (not a killed one's reused PID)
        return str(lock.resolve()) in _HELD
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return False
    start = _start_ticks(pid)
    if start == "zombie":
        return False
    return owner.get("start") is None or start is None or owner["start"] == start  # else: a reused PID


def _start_ticks(pid: int):
    """A process's start time since boot (Linux /proc), which tells a reused PID from the lock's owner; "zombie"
    for a finished process not yet reaped; None where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return "zombie" if fields[0] in ("Z", "X") else int(fields[19])


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
