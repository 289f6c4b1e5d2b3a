"""A process pool whose workers die with the process that started them: a parent killed with SIGKILL (an OOM
kill, ``kill -9``, a cluster's pre-emption) runs no cleanup, and a pool worker blocked on its task queue would
otherwise live on under PID 1, holding its memory, for as long as the machine runs."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_JOB = None  # in a worker: the job of spread(), inherited once instead of pickled with every batch


@contextlib.contextmanager
def spread(fn, job, num_proc: int, batch: int = 64):
    """A function items -> the rows of ``fn(items, job)``: in this process, or in batches over ``num_proc``
    workers of ``pool`` (module-level ``fn``: it is sent by name)."""
    if num_proc <= 1:
        yield lambda items: fn(items, job)
        return
    with pool(num_proc, _set_job, (job,)) as workers:
        def run(items: list) -> list:
            size = max(1, min(batch, math.ceil(len(items) / num_proc)))
            parts = [items[i:i + size] for i in range(0, len(items), size)]
            return [row for rows in workers.map(functools.partial(_run, fn), parts) for row in rows]
        yield run


def _set_job(job) -> None:
    global _JOB
    _JOB = job


def _run(fn, items: list) -> list:
    return fn(items, _JOB)


def pool(workers: int, initializer=None, initargs=()) -> ProcessPoolExecutor:
    """``workers`` processes, each first tied to this process's life, then ``initializer(*initargs)``. Forked
    on Linux (as datasets.map forks): the workers inherit the arguments instead of unpickling them, and start
    without importing torch again."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                               initargs=(os.getpid(), initializer, initargs))


def _start(parent: int, initializer, initargs) -> None:
    die_with_parent(parent)
    if "torch" in sys.modules:  # one thread per worker: the pool is the parallelism (and a forked OpenMP pool hangs)
        sys.modules["torch"].set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGKILL to this process when ``parent`` dies (Linux), else watch for it from a
    thread; exit at once if it is already gone (the signal is armed only for a parent still alive)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
