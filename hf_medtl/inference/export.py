"""`hf-medtl export MODEL_DIR --onnx OUT`: the saved model as ONNX (pixels in, logits out), with the
preprocessing and the labels in the file's metadata, checked against PyTorch with onnxruntime on real images."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")
ATOL = 1e-4  # largest difference of any probability between onnxruntime and PyTorch


def preprocessing_metadata(processor, model) -> dict:
    """What a caller must do to an image before the ONNX graph: the saved processor's settings, stated."""
    from hf_medtl.data.transforms import preprocessing_from_processor
    from hf_medtl.models import is_multi_label

    prep = preprocessing_from_processor(processor)
    return {
        "decode": "8-bit RGB by hf_medtl.data.decode: 16/32-bit grayscale windowed to its 0.5-99.5th percentiles, "
                  "DICOM through its Modality and VOI LUTs (MONOCHROME1 inverted), EXIF orientation applied",
        "resize": {"height": prep.size[0], "width": prep.size[1], "interpolation": prep.interpolation,
                   "mode": "the whole image squashed to this size, no crop"},
        "rescale": "pixel / 255", "normalize": {"mean": list(prep.mean), "std": list(prep.std)},
        "layout": "float32 NCHW, RGB", "output": "logits",
        "probabilities": "sigmoid per label" if is_multi_label(model) else "softmax over labels",
    }


def check_onnx(onnx_path: str | Path, model, processor, images) -> float:
    """Largest |p_onnxruntime - p_pytorch| over ``images`` and labels; HfMedtlError when above ATOL."""
    import onnxruntime as ort

    from hf_medtl.inference import core
    from hf_medtl.models import is_multi_label

    x = core.pixels(processor, images)
    torch_probs = core.batch_probabilities(model, x)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"pixel_values": x.numpy()})[0]
    diff = float(np.abs(core.probabilities(onnx_logits, is_multi_label(model)) - torch_probs).max())
    if not diff <= ATOL:
        raise HfMedtlError(f"{onnx_path}: onnxruntime's probabilities differ from PyTorch's by {diff:.2e} "
                           f"(> {ATOL:g}) on {len(images)} image(s); do not use this export")
    return diff


def export_onnx(model_dir: str | Path, out: str | Path, check_inputs, opset: int = 18, max_check: int = 64,
                allow_pickle_weights: bool = False, trust_remote_code: bool = False) -> dict:
    """Write ``out`` (ONNX, dynamic batch) and check it on up to ``max_check`` images of ``check_inputs``."""
    import onnx
    import torch

    from hf_medtl.data.decode import DecodeError, decode
    from hf_medtl.data.transforms import preprocessing_from_processor
    from hf_medtl.inference.core import Logits
    from hf_medtl.models import load_saved_model
    from hf_medtl.inference.predict import collect_inputs

    model, processor, classes = load_saved_model(model_dir, allow_pickle_weights, trust_remote_code)
    files, _ = collect_inputs(check_inputs)
    images = []
    for path in files[:max_check]:
        try:
            images.append(decode(path))
        except DecodeError as e:
            logger.warning(f"{path}: unreadable ({e}); not used for the check")
    if not images:
        raise HfMedtlError(f"no readable image among {', '.join(map(str, check_inputs))} to check the export on")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = preprocessing_from_processor(processor).size
    dummy = torch.zeros(2, 3, h, w)
    # The TorchScript exporter (dynamo=False): deprecated, but present in the pinned torch and twice as fast as the
    # torch.export one on CPU for these graphs; both give the same probabilities here (checked below either way).
    torch.onnx.export(Logits(model).eval(), (dummy,), str(out), input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
                      verbose=False)
    graph = onnx.load(str(out))
    meta = {"hf_medtl.preprocessing": json.dumps(preprocessing_metadata(processor, model)),
            "hf_medtl.labels": json.dumps(classes), "hf_medtl.source": Path(model_dir).resolve().name}
    for key, value in meta.items():
        graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(graph, str(out))
    diff = check_onnx(out, model, processor, images)
    return {"path": str(out), "images_checked": len(images), "max_abs_diff": diff, "labels": classes}
