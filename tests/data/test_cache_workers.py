"""A parallel image-cache build killed with SIGKILL takes its worker processes with it (issue 24, class 13):
a parent killed that way runs no cleanup, and its pool's workers used to live on under PID 1. A worker killed
with SIGKILL (the kernel's OOM killer) stops the command in one line, the chunks already written kept (issue 35)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, make_image_folder
from tests.data.cache_helpers import same_tables, scored  # noqa: F401 (fixtures)

BUILD = """
import sys, time
from hf_medtl.data import cache, decode as dec
from hf_medtl.data.dataset import sample_keys
from hf_medtl.data.sources import scan_class_folders
slow = dec.decode
def decode(*a, **k):
    time.sleep(0.2)
    return slow(*a, **k)
cache.decode = decode  # the workers are forked: they decode this slowly too
samples = scan_class_folders(sys.argv[1]).samples
cache.build(sample_keys(samples), [s.source for s in samples], cache.Variant("eval", (16, 16), "bilinear"),
            sys.argv[2], num_proc=int(sys.argv[3]))
print("finished")
"""


def _stat(pid: int):
    """(state, parent pid) from /proc, None when the process is gone (psutil is not a dependency)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    parent = {int(p): _stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    parent = {p: s[1] for p, s in parent.items() if s}
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited; its new parent reaps it


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("num_proc", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_sigkill_during_a_parallel_build_leaves_no_worker_alive(tmp_path, num_proc):
    data = make_image_folder(tmp_path / "data", per_class=(14, 14, 14))  # 42 images x 0.2 s: seconds of work
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(data), str(tmp_path / "cache"), str(num_proc)],
                            env=env, stdout=subprocess.PIPE)
    workers, deadline = [], time.time() + 120
    while len(workers) < num_proc and time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= num_proc, "the build should have started its workers"
    time.sleep(1.0)  # in the middle of decoding
    assert proc.poll() is None, "the build should still be running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "workers outlived the killed build"


def test_a_parallel_build_stores_what_a_serial_one_does(tmp_path):
    import numpy as np

    from hf_medtl.data import cache
    from hf_medtl.data.dataset import sample_keys
    from hf_medtl.data.sources import scan_class_folders

    samples = scan_class_folders(make_image_folder(tmp_path / "data", per_class=(5, 5, 5))).samples
    keys, sources = sample_keys(samples), [s.source for s in samples]
    variant = cache.Variant("eval", (16, 16), "bilinear")
    serial, _ = cache.build(keys, sources, variant, tmp_path / "one", num_proc=1)
    parallel, built = cache.build(keys, sources, variant, tmp_path / "two", num_proc=2)
    assert built == 15
    assert all(np.array_equal(np.asarray(serial.image(k)), np.asarray(parallel.image(k))) for k in keys)


# `hf-medtl` whose image-cache workers (never the command's own process) SIGKILL themselves on one file, as the
# kernel's OOM killer would: the workers are forked, so they inherit the patched decode. Chunks of 4 entries, so that
# some are written before the worker dies.
DYING = """
import os, sys
from hf_medtl.data import cache
from hf_medtl.cli import main
cache.CHUNK = 4
parent, decode = os.getpid(), cache.decode
def dying(source, *args, **kwargs):
    if os.getpid() != parent and os.path.basename(str(source)) == sys.argv[1]:
        os.kill(os.getpid(), 9)
    return decode(source, *args, **kwargs)
cache.decode = dying
sys.exit(main(sys.argv[2:]))
"""


def test_an_oom_killed_cache_worker_is_one_line_and_keeps_the_chunks_written(tmp_path, tiny_resnet, scored,
                                                                             hf_medtl_log):
    import datasets

    from hf_medtl.cli import main

    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5), classes=("LABEL_0", "LABEL_1", "LABEL_2"))
    victim = sorted(p.name for p in data.rglob("*.*"))[9]
    command = ["evaluate", str(tiny_resnet), str(data), "--n_bootstrap", "0", "--data_cache_dir", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_MEDTL_CACHE_WORKERS": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DYING, victim, *command, "--output_dir", str(tmp_path / "killed")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    [line] = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert "a decoding worker process died (killed: out of memory?)" in line
    assert "set $HF_MEDTL_CACHE_WORKERS to fewer processes than 2" in line and "--no_data_cache" in line
    assert not (tmp_path / "killed" / "report.json").exists()
    # Nothing half written: every chunk left is whole (4 entries), no temporary folder is left.
    [variant] = list((tmp_path / "cache").iterdir())
    chunks = sorted(variant.glob("chunk-*"))
    assert [len(datasets.load_from_disk(str(c))) for c in chunks] == [4] * len(chunks)
    assert not list(variant.glob(".tmp*"))

    # The next run decodes only the rest, and scores what the files score.
    files = main([*command[:5], "--no_data_cache", "--output_dir", str(tmp_path / "files")])
    expected = list(scored)
    scored.clear()
    hf_medtl_log.clear()
    assert files == 0 and main([*command, "--output_dir", str(tmp_path / "again")]) == 0
    assert f"{15 - 4 * len(chunks)} of 15 copies decoded now" in hf_medtl_log.text
    same_tables(expected, list(scored), "after the killed build")
