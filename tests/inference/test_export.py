"""`hf-medtl export --onnx`: the ONNX graph, its metadata, and onnxruntime against PyTorch on real images."""
import json

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
