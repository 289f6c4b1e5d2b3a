"""Atomic outputs: a run's files appear together, metrics.json last; writes never leave half a file."""
import os

import pytest

from hf_medtl import outputs
from hf_medtl.errors import HfMedtlError


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "f.json"
    outputs.atomic_write_text(target, "old")
    outputs.atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_commit_moves_everything_with_the_marker_last(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out).mkdir()
    (out / outputs.MARKER).write_text("previous run")
    staging = outputs.staging_dir(out)
    for name in (outputs.MARKER, "config.json", "plots/a.png"):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(name)
    order, replace = [], os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (order.append(os.path.basename(b)), replace(a, b)))
    seen_marker_during_commit = []
    original_unlink = type(out).unlink

    def unlink(self, missing_ok=False):
        seen_marker_during_commit.append(self.name)
        return original_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(type(out), "unlink", unlink)
    outputs.commit(staging, out)
    assert order[-1] == outputs.MARKER and set(order) == {outputs.MARKER, "config.json", "a.png"}
    assert seen_marker_during_commit[0] == outputs.MARKER  # the old marker goes first
    assert (out / outputs.MARKER).read_text() == outputs.MARKER and not staging.exists()
    assert outputs.holds_complete_run(out)


def test_ensure_writable_refuses_a_file_and_an_impossible_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HfMedtlError, match="is a file"):
        outputs.ensure_writable(tmp_path / "f")
    with pytest.raises(HfMedtlError, match="not writable"):
        outputs.ensure_writable(tmp_path / "f" / "sub")
    assert outputs.ensure_writable(tmp_path / "new" / "dir").is_dir()


def test_resolve_checkpoint(tmp_path):
    assert outputs.resolve_checkpoint(None, tmp_path) is None and outputs.resolve_checkpoint("false", tmp_path) is None
    with pytest.raises(HfMedtlError, match="no complete checkpoint"):
        outputs.resolve_checkpoint("last", tmp_path)
    for step, complete in ((4, True), (8, True), (12, False)):  # checkpoint-12 was killed before its state file
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / outputs.STATE_FILE).write_text("{}")
    assert outputs.resolve_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-8")
    with pytest.raises(HfMedtlError, match="not a complete hf_medtl checkpoint"):
        outputs.resolve_checkpoint(str(tmp_path / "checkpoint-12"), tmp_path)


# -- a run owns its output folder (issue 24, defect 2) ---------------------------------------------------------------
import json  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from hf_medtl.cli import main  # noqa: E402
from tests.conftest import REPO, errors, tiny_recipe  # noqa: E402


@pytest.fixture
def live_pid():
    """A live process that is not this one (the owner of a lock written by hand)."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc.pid
    proc.kill()
    proc.wait()


def finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the PID names no process now
    return proc.pid


def write_lock(out, text: str):
    out.mkdir(parents=True, exist_ok=True)
    (out / outputs.LOCK).write_text(text)
    return out / outputs.LOCK


def folder(out) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


@pytest.mark.parametrize("form", ["json", "bare pid"])
@pytest.mark.parametrize("command", ["finetune", "check-data"])
def test_a_live_runs_lock_refuses_a_second_run_before_it_reads_anything(tmp_path, image_folder, tiny_vit, capsys,
                                                                         live_pid, form, command):
    out = tmp_path / "run"
    text = json.dumps({"pid": live_pid, "host": socket.gethostname()}) if form == "json" else f"{live_pid}\n"
    lock = write_lock(out, text)
    assert main([command, str(tiny_recipe(tmp_path, tiny_vit, image_folder))]) == 2
    err = errors(capsys)
    assert len(err) == 1 and f"PID {live_pid}" in err[0] and str(out) in err[0], err
    assert folder(out) == [outputs.LOCK] and lock.read_text() == text  # nothing written, the owner's lock kept


def test_a_lock_from_another_host_is_refused_naming_that_host(tmp_path, image_folder, tiny_vit, capsys):
    out = tmp_path / "run"
    write_lock(out, json.dumps({"pid": finished_pid(), "host": "other-node-7"}))  # its processes cannot be seen
    assert main(["check-data", str(tiny_recipe(tmp_path, tiny_vit, image_folder))]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "other-node-7" in err[0] and folder(out) == [outputs.LOCK]


def _stale_lock(kind: str, live: int) -> dict:
    host = socket.gethostname()
    if kind == "finished process":
        return {"pid": finished_pid(), "host": host}
    if kind == "this process's PID, not taken by it":  # a killed run in a container whose PID repeats
        return {"pid": os.getpid(), "host": host}
    return {"pid": live, "host": host, "start": 1}  # a reused PID: the process there started later than the lock's


@pytest.mark.parametrize("kind", ["finished process", "this process's PID, not taken by it", "reused PID"])
def test_a_stale_lock_is_taken_over_and_the_run_succeeds(tmp_path, image_folder, tiny_vit, hf_medtl_log, live_pid,
                                                         kind):
    out = tmp_path / "run"
    owner = _stale_lock(kind, live_pid)
    write_lock(out, json.dumps(owner))
    assert main(["finetune", str(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1))]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and (out / "model.safetensors").is_file()
    assert not (out / outputs.LOCK).exists() and not (out / (outputs.LOCK + ".takeover")).exists()
    assert any(f"took over the lock of PID {owner['pid']}" in m for m in hf_medtl_log.messages)


def test_the_lock_is_released_after_success_error_and_interrupt(tmp_path, image_folder, tiny_vit, capsys, monkeypatch):
    from hf_medtl import stages

    recipe = str(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1))
    out = tmp_path / "run"
    assert main(["check-data", recipe]) == 0 and (out / "data_report.json").is_file()
    assert main(["finetune", recipe]) == 0 and (out / "metrics.json").is_file()
    assert not (out / outputs.LOCK).exists()

    # A failure inside the run (the data folder went missing after the recipe was written): one line, lock gone.
    moved = image_folder.rename(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["finetune", recipe, "--output_dir", str(tmp_path / "failed")]) == 2
    assert len(errors(capsys)) == 1 and (tmp_path / "failed").is_dir()  # failed inside the run, after the lock
    assert not (tmp_path / "failed" / outputs.LOCK).exists()
    moved.rename(image_folder)

    def interrupted(run):
        assert (out / outputs.LOCK).is_file()  # held while the run trains
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "train", interrupted)
    assert main(["finetune", recipe]) == 130
    assert not (out / outputs.LOCK).exists() and (out / "metrics.json").is_file()  # the finished run kept whole


def test_a_run_in_progress_refuses_others_and_its_lock_is_recovered_after_kill_9(tmp_path, image_folder, tiny_vit,
                                                                                  capsys):
    recipe = str(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1000, adaptive_lr=False))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hf_medtl.finetune", recipe], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (out / "data_report.json").exists():
            time.sleep(0.05)
        assert proc.poll() is None, "the first run ended before the test could race it"
        before = folder(out)
        for command in ("finetune", "check-data"):
            assert main([command, recipe]) == 2
            err = errors(capsys)
            assert len(err) == 1 and f"PID {proc.pid}" in err[0], err
        assert set(folder(out)) >= set(before) and not (out / "metrics.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((out / outputs.LOCK).read_text())["pid"] == proc.pid  # a killed run cannot clean up
    assert main(["check-data", recipe]) == 0 and not (out / outputs.LOCK).exists()


def test_writers_that_do_not_take_the_lock_refuse_a_locked_folder(tmp_path, live_pid):
    out = tmp_path / "study"
    write_lock(out, json.dumps({"pid": live_pid, "host": socket.gethostname()}))
    (out / outputs.STAGING).mkdir()
    (out / outputs.STAGING / "staged.txt").write_text("the live run's")
    with pytest.raises(HfMedtlError, match=f"PID {live_pid}"):
        outputs.staging_dir(out)
    with pytest.raises(HfMedtlError, match=f"PID {live_pid}"):
        outputs.commit(out / outputs.STAGING, out)
    assert (out / outputs.STAGING / "staged.txt").read_text() == "the live run's"


def test_run_lock_is_exclusive_within_one_process_and_other_ranks_do_not_take_it(tmp_path):
    with outputs.run_lock(tmp_path / "run") as out:
        owner = json.loads((out / outputs.LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(HfMedtlError, match="in use"):
            with outputs.run_lock(out):
                pass
        with outputs.run_lock(out, take=False):  # a rank other than 0: rank 0 holds it for every rank
            pass
        outputs.staging_dir(out)  # its holder may stage
        assert (out / outputs.LOCK).is_file()
    assert not (out / outputs.LOCK).exists()


def test_an_empty_lock_is_waited_for_while_fresh_and_taken_over_when_old(tmp_path, hf_medtl_log):
    """A lock created but not yet written (its owner writes it the next instant) is not stale; one left empty by a
    process killed between creating and writing it is."""
    lock = write_lock(tmp_path / "run", "")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with outputs.run_lock(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and any("took over the lock" in m for m in hf_medtl_log.messages)


def _write_many(target: str, text: str, n: int, failures) -> None:
    from hf_medtl.outputs import atomic_write_text

    for _ in range(n):
        try:
            atomic_write_text(target, text)
        except OSError:
            failures.value += 1


def test_two_writers_to_one_path_never_lose_a_write_or_leave_half_of_one(tmp_path):
    """predict --output and every other atomic write go through a temporary name unique to the writer: with a fixed
    '.tmp' name, two processes renamed each other's files away (about half of 600 writes failed)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    target, texts = tmp_path / "predictions.csv", [f"writer {w}\n" * 2000 for w in range(2)]
    failures = ctx.Value("i", 0)
    writers = [ctx.Process(target=_write_many, args=(str(target), t, 300, failures)) for t in texts]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert failures.value == 0 and target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left behind


def test_a_truly_full_disk_while_saving_weights_is_one_line(tmp_path, image_folder, tiny_vit, capsys):
    """output_dir on a 64 KiB tmpfs: the data files fit, the weights do not. safetensors raises its own
    SafetensorError (os error 28): one line naming the weights file, exit 2, nothing that looks complete."""
    import subprocess

    from hf_medtl.finetune import main
    from tests.conftest import errors, tiny_recipe

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=24, n_bootstrap=0,
                             output_dir=str(disk / "run"), dedupe=False)
        assert main([str(recipe)]) == 2
        [line] = errors(capsys)
        assert line.startswith(f"error: {disk / 'run' / '.staging' / 'model.safetensors'}: no space left on the device")
        assert not (disk / "run" / "metrics.json").exists() and not (disk / "run" / "model.safetensors").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
