"""Where a command's wall time goes: named phases (start-up, data, image cache, model load, the epochs, scoring,
report, card, save), each counted once, for metrics.json's ``timings`` and the console's last row.

A phase's seconds are its own: a phase opened inside another (the image cache inside the data stage) stops the
outer one's clock while it runs, so the phases add up, and ``other`` is what no phase claimed. ``startup`` runs
from the process's start (interpreter, imports, argument parsing) to the clock's creation, so ``total`` is the
process's whole wall time so far. The stages open phases through the module-level ``phase(name)``, a no-op when
no clock is running (a library call of a stage, a test), so timing never changes what a stage does."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, Optional

# Display names, in the order a run passes through them; a phase not listed is shown under its own key.
NAMES = {"startup": "start-up", "data": "data", "image_cache": "image cache", "model_load": "model load",
         "train_setup": "training setup", "first_epoch": "first epoch", "later_epochs": "later epochs",
         "features": "features", "scoring": "scoring", "report": "report+plots", "card": "card", "save": "save",
         "other": "other"}


def _entry_process() -> bool:
    """Whether this process was started as an hf_medtl command (`hf-medtl`, `python -m hf_medtl.cli`, the finetune
    script), so that its start-up is this command's; inside another program (a test, a notebook) it is not."""
    import sys
    from pathlib import Path

    program = Path(sys.argv[0] if sys.argv and sys.argv[0] else "")
    return program.name == "hf-medtl" or program.as_posix().endswith(("hf_medtl/cli/__main__.py",
                                                                      "hf_medtl/finetune.py"))


def process_start() -> Optional[float]:
    """The process's start on time.time()'s scale (psutil, installed with accelerate); None when unknown."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # a platform without it: start-up is then counted from the clock's creation
        return None


class Clock:
    """Phase timer. ``with clock.phase(name)`` counts a span; ``enter`` / ``swap`` / ``leave`` do the same for spans
    whose ends are events (the Trainer's callbacks); ``snapshot()`` reads every phase as of now."""

    def __init__(self, since_process_start: bool = False):
        now, wall = time.perf_counter(), time.time()
        started = process_start() if since_process_start else None
        # The process's start, moved onto perf_counter's scale.
        self.origin = now - max(wall - started, 0.0) if started is not None else now
        self.seconds: dict[str, float] = {}
        if now > self.origin:
            self.seconds["startup"] = now - self.origin
        self._stack: list[list] = []  # [name, time this phase's clock last (re)started]
        self.claimed = False  # by a run (finetune.run): a run inside it (a seed-ensemble member) gets its own
        # $HF_MEDTL_TIMELINE: a file that gets a line "enter|leave PHASE UNIX_TIME" per event, so that a benchmark
        # can place samples taken beside the run (GPU utilisation: benchmarks/phases.py) in its phases.
        self.timeline = os.environ.get("HF_MEDTL_TIMELINE") or None

    def _event(self, what: str, name: str) -> None:
        if self.timeline:
            with open(self.timeline, "a") as f:
                f.write(f"{what} {name} {time.time():.3f}\n")

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        if self._stack:  # the outer phase pauses
            outer = self._stack[-1]
            self._add(outer[0], now - outer[1])
        self._stack.append([name, now])
        self._event("enter", name)

    def leave(self, name: Optional[str] = None) -> None:
        """Close the innermost phase (``name``, when given, must be it: a mismatch leaves the stack alone)."""
        if not self._stack or (name is not None and self._stack[-1][0] != name):
            return
        now = time.perf_counter()
        inner = self._stack.pop()
        self._add(inner[0], now - inner[1])
        self._event("leave", inner[0])
        if self._stack:
            self._stack[-1][1] = now  # the outer phase resumes

    def swap(self, name: str) -> None:
        """Close the innermost phase and open ``name`` at the same instant."""
        self.leave()
        self.enter(name)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        depth = len(self._stack)
        self.enter(name)
        try:
            yield
        finally:
            while len(self._stack) > depth:  # phases an exception left open inside this one
                self.leave()

    def snapshot(self) -> dict:
        """{phase: seconds} as of now (open phases counted up to now), then ``other`` and ``total`` (seconds since
        the process started), rounded to 0.01 s."""
        now = time.perf_counter()
        seconds = dict(self.seconds)
        for name, since in self._stack:
            seconds[name] = seconds.get(name, 0.0) + now - since
        total = now - self.origin
        order = [k for k in NAMES if k in seconds] + [k for k in seconds if k not in NAMES]
        out = {k: round(seconds[k], 2) for k in order}
        out["other"] = round(max(total - sum(seconds.values()), 0.0), 2)
        out["total"] = round(total, 2)
        return out


_active: Optional[Clock] = None
_started_once = False


def start(since_process_start: Optional[bool] = None) -> Clock:
    """A new clock, which ``phase`` then feeds, for one command (a finetune run, an evaluation). Start-up is
    counted from the process's start when it was started as an hf_medtl command and this is its first clock
    (``since_process_start`` None), else from now."""
    global _active, _started_once
    if since_process_start is None:
        since_process_start = not _started_once and _entry_process()
    _started_once = True
    _active = Clock(since_process_start)
    return _active


def active() -> Optional[Clock]:
    return _active


@contextlib.contextmanager
def command() -> Iterator[Clock]:
    """The clock of one run: the one ``start`` made for this command (the CLI's, counting start-up), or, for a
    run inside another or a library call, a new one from now; the outer clock is restored afterwards."""
    global _active
    outer = _active
    clock = outer if outer is not None and not outer.claimed else Clock(since_process_start=False)
    clock.claimed = True
    _active = clock
    try:
        yield clock
    finally:
        _active = outer


def snapshot() -> Optional[dict]:
    """The running clock's phases as of now (Clock.snapshot), None when none runs."""
    return _active.snapshot() if _active is not None else None


def stop() -> None:
    global _active
    _active = None


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the enclosed span as ``name`` on the running clock; nothing when none runs."""
    clock = _active
    if clock is None:
        yield
        return
    with clock.phase(name):
        yield


def enter(name: str) -> None:
    if _active is not None:
        _active.enter(name)


def swap(name: str) -> None:
    if _active is not None:
        _active.swap(name)


def leave(name: Optional[str] = None) -> None:
    if _active is not None:
        _active.leave(name)


def row(timings: dict) -> str:
    """One console line: every phase over 0.005 s, then the total, e.g.
    ``timings: start-up 4.1s | data 3.2s | ... | total 61.0s``."""
    from hf_medtl.console import duration

    parts = [f"{NAMES.get(k, k)} {duration(v)}" for k, v in timings.items() if k != "total" and v >= 0.005]
    return "timings: " + " | ".join(parts + [f"total {duration(timings['total'])}"])
