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
