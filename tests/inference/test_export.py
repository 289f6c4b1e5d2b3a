"""`hf-medtl export --onnx`: the ONNX graph, its metadata, and onnxruntime against PyTorch on real images; a refused
or failed export (opset, folder, missing extra, exporter or onnxruntime failure, mismatch, full disk, Ctrl-C) is one
line, exit 2, and leaves nothing at --onnx (an earlier good export there unchanged) and no temporary file."""
import json
from pathlib import Path

import numpy as np
import pytest

from hf_medtl.cli import main

pytest.importorskip("onnxruntime")


def test_onnx_round_trip_matches_pytorch(trained_run, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.models import load_saved_model
    from hf_medtl.inference.core import probabilities

    images = trained_run.parent / "images"
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained_run), "--onnx", str(out), "--check", str(images)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}; onnxruntime matches PyTorch on 36 image(s): largest probability difference")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["hf_medtl.labels"]) == ["benign", "malignant", "normal"]
    prep = json.loads(meta["hf_medtl.preprocessing"])
    assert prep["resize"]["height"] == 24 and prep["probabilities"] == "softmax over labels" and "DICOM" in prep["decode"]
    assert prep["views_inside"] == ["identity"]  # (the preset's run: no TTA)

    # Independently of the export's own check: a batch of 5 (the batch axis is dynamic), probabilities within 1e-4.
    model, processor, _ = load_saved_model(trained_run)
    files = sorted((images / "normal").iterdir())[:5]
    pixels = np.stack([eval_transform(processor)(decode(f)).numpy() for f in files])
    onnx_probs = probabilities(ort.InferenceSession(str(out)).run(["logits"], {"pixel_values": pixels})[0])
    import torch

    with torch.no_grad():
        torch_probs = probabilities(model(pixel_values=torch.from_numpy(pixels)).logits.numpy())
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4 and onnx_probs.shape == (5, 3)


def test_export_without_a_readable_check_image_is_one_line(trained_run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"junk")
    assert main(["export", str(trained_run), "--onnx", str(tmp_path / "m.onnx"), "--check", str(tmp_path / "bad.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: no readable image among {tmp_path / 'bad.png'} to check the export on")


# -- a failed export leaves nothing at --onnx (and an earlier good export there untouched) -------------------------
def export_argv(trained_run, out, *extra):
    return ["export", str(trained_run), "--onnx", str(out), "--check", str(trained_run.parent / "images"), *extra]


def one_error_line(capfd) -> str:
    """The single line a refused export prints, read at the file descriptors (where the exporter's C++ writes)."""
    printed = capfd.readouterr()
    assert printed.out == "" and "graph(" not in printed.err and "Traceback" not in printed.err, printed
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def good_export(trained_run, tmp_path, capfd):
    out = tmp_path / "exports" / "model.onnx"
    assert main(export_argv(trained_run, out)) == 0
    capfd.readouterr()
    return out, out.read_bytes()


def only(out, content=None):
    """Nothing but ``out`` (holding ``content``; absent when None) in its folder: no temporary sibling left over."""
    assert sorted(p.name for p in out.parent.iterdir()) == ([] if content is None else [out.name])
    if content is not None:
        assert out.read_bytes() == content


@pytest.mark.parametrize("opset", ["99", "21", "6"])
def test_an_opset_out_of_range_is_one_line(trained_run, tmp_path, capfd, opset):
    out = tmp_path / "exports" / "model.onnx"
    assert main(export_argv(trained_run, out, "--opset", opset)) == 2
    assert one_error_line(capfd) == (f"error: --opset {opset} is not supported: the exporter writes --opset 7..20 "
                                     "(default 18)")
    assert not out.exists()


def test_an_exporter_failure_prints_no_graph_and_leaves_nothing(trained_run, good_export, capfd, monkeypatch):
    import hf_medtl.inference.export as export

    out, content = good_export
    monkeypatch.setattr(export, "MAX_OPSET", 99)  # let 99 reach torch, which dumps its graph on fd 1 as it fails
    assert main(export_argv(trained_run, out, "--opset", "99")) == 2
    line = one_error_line(capfd)
    assert line == ("error: the ONNX exporter cannot write this model at --opset 99 (Unsupported onnx_opset_version: "
                    "99); try another --opset 7..20 (default 18); nothing was written")
    only(out, content)
    assert main(export_argv(trained_run, out.with_name("fresh.onnx"), "--opset", "99")) == 2
    only(out, content)


def test_a_file_onnxruntime_refuses_is_not_left(trained_run, good_export, capfd, monkeypatch):
    import onnx

    out, content = good_export
    save = onnx.save

    def save_at_a_future_opset(graph, path, *a, **kw):  # a file of an opset this onnxruntime cannot run
        graph.opset_import[0].version = 99
        save(graph, path, *a, **kw)

    monkeypatch.setattr(onnx, "save", save_at_a_future_opset)
    assert main(export_argv(trained_run, out)) == 2
    assert one_error_line(capfd).startswith(f"error: {out}: onnxruntime cannot run the export (")
    only(out, content)


def test_a_failed_check_keeps_the_earlier_export(trained_run, good_export, capfd, monkeypatch):
    import hf_medtl.inference.export as export

    out, content = good_export
    monkeypatch.setattr(export, "ATOL", -1.0)  # every comparison fails, as a real probability mismatch does
    assert main(export_argv(trained_run, out)) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: {out}: onnxruntime's probabilities differ from PyTorch's by ")
    assert line.endswith("on 36 image(s); nothing was written")
    only(out, content)
    assert main(export_argv(trained_run, out.with_name("other.onnx"))) == 2
    only(out, content)


def test_a_full_disk_is_one_line_and_leaves_nothing(trained_run, good_export, capfd, monkeypatch):
    import errno

    import onnx

    out, content = good_export

    def full_disk(graph, path, *a, **kw):
        Path(path).write_bytes(b"\0" * 100)  # the part written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    assert main(export_argv(trained_run, out)) == 2
    assert one_error_line(capfd) == (f"error: --onnx {out}: cannot write it (No space left on device); "
                                     "nothing was written")
    only(out, content)


def test_an_interrupted_export_leaves_nothing(trained_run, tmp_path, capfd, monkeypatch):
    import onnxruntime

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxruntime, "InferenceSession", interrupt)
    out = tmp_path / "exports" / "model.onnx"
    assert main(export_argv(trained_run, out)) == 130
    only(out)


def test_onnx_naming_a_folder_is_one_line(trained_run, tmp_path, capfd):
    (tmp_path / "exports").mkdir()
    assert main(export_argv(trained_run, tmp_path / "exports")) == 2
    assert one_error_line(capfd) == (f"error: --onnx {tmp_path / 'exports'} is a folder; name the file to write, "
                                     f"e.g. {tmp_path / 'exports' / 'model.onnx'}")
    assert list((tmp_path / "exports").iterdir()) == []


def test_onnx_under_a_file_is_one_line(trained_run, tmp_path, capfd):
    (tmp_path / "notes.txt").write_text("not a folder")
    out = tmp_path / "notes.txt" / "model.onnx"
    assert main(export_argv(trained_run, out)) == 2
    assert one_error_line(capfd) == (f"error: --onnx {out}: its folder cannot be created "
                                     f"({tmp_path / 'notes.txt'} is a file, not a folder)")
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_export_without_the_export_extra_names_the_install(trained_run, tmp_path, capfd, monkeypatch, package):
    import sys

    monkeypatch.setitem(sys.modules, package, None)  # what an install without the [export] extra sees
    out = tmp_path / "model.onnx"
    assert main(export_argv(trained_run, out)) == 2
    assert one_error_line(capfd) == f'error: export needs {package}, which is not installed: pip install -e ".[export]"'
    assert not out.exists()
