"""`hf-medtl export MODEL_DIR --onnx OUT`: the saved model as ONNX (pixels in, logits out), with the
preprocessing and the labels in the file's metadata, checked against PyTorch with onnxruntime on real images.

The file is written to a hidden temporary sibling of OUT, checked there, and only then renamed onto OUT: a failed
export (an opset the exporter or onnxruntime refuses, probabilities that differ, a full disk, Ctrl-C) leaves nothing
at OUT, and an earlier good export there stays as it was."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from hf_medtl.config.commands import DEFAULT_OPSET, MAX_CHECK
from hf_medtl.errors import HfMedtlError
from hf_medtl.outputs import temporary_sibling

logger = logging.getLogger("hf_medtl")
ATOL = 1e-4  # largest difference of any probability between onnxruntime and PyTorch
# The opsets the TorchScript exporter (torch.onnx.export with dynamo=False) of the pinned torch writes; above 20 it
# only warns and writes a file it does not stand behind. torch keeps the range in a private module, hence stated here.
MIN_OPSET, MAX_OPSET = 7, 20
OPSETS = f"--opset {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})"
INSTALL = 'pip install -e ".[export]"'


def preprocessing_metadata(processor, model) -> dict:
    """What a caller must do to an image before the ONNX graph: the saved processor's settings, stated."""
    from hf_medtl.data.transforms import preprocessing_from_processor
    from hf_medtl.models import is_multi_label

    prep = preprocessing_from_processor(processor)
    return {
        "decode": "8-bit RGB by hf_medtl.data.decode: 16/32-bit grayscale windowed to the 0.5-99.5th percentiles of "
                  "its finite pixels (NaN and -Inf black, +Inf white), DICOM through its Modality and VOI LUTs "
                  "(MONOCHROME1 inverted), EXIF orientation applied",
        "resize": {"height": prep.size[0], "width": prep.size[1], "interpolation": prep.interpolation,
                   "mode": _resize_mode(processor)},
        "rescale": "pixel / 255", "normalize": {"mean": list(prep.mean), "std": list(prep.std)},
        "layout": "float32 NCHW, RGB", "output": "logits",
        "probabilities": "sigmoid per label" if is_multi_label(model) else "softmax over labels",
        # Test-time views the graph averages over itself (the run's flip TTA): the caller adds none.
        "views_inside": list(getattr(model.config, "views", None) or ["identity"]),
    }


def _resize_mode(processor) -> str:
    """How the saved processor brings an image to the input size: squashed whole (hf_medtl's own processors), or
    resized and centre-cropped (a checkpoint's processor that crops), with the settings it uses."""
    config = getattr(processor, "data_config", None)
    if config:  # timm: resize to input_size / crop_pct, then centre crop
        pct = config.get("crop_pct", 1.0)
        return ("the whole image squashed to this size, no crop" if pct >= 1.0 and config.get("crop_mode") != "center"
                else f"timm eval transform: resized by crop_pct {pct} ({config.get('crop_mode', 'center')}), then "
                     "centre-cropped to this size")
    size = getattr(processor, "size", None) or {}
    if getattr(processor, "do_center_crop", False) or "shortest_edge" in size:
        return (f"{type(processor).__name__}: shorter side resized to {size.get('shortest_edge', size)} (crop_pct "
                f"{getattr(processor, 'crop_pct', None)}), then centre-cropped to this size")
    return "the whole image squashed to this size, no crop"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:200] if text else type(e).__name__)


def check_onnx(onnx_path: str | Path, model, processor, images, name: str | Path | None = None) -> float:
    """Largest |p_onnxruntime - p_pytorch| over ``images`` and labels; HfMedtlError when above ATOL or when
    onnxruntime cannot run the file. ``name``: how the messages call the file (the path it is meant for)."""
    import onnxruntime as ort

    from hf_medtl.inference import core
    from hf_medtl.models import is_multi_label

    name = name or onnx_path
    x = core.pixels(processor, images)
    torch_probs = core.batch_probabilities(model, x)
    try:
        with _silenced():  # onnxruntime logs its own warnings (an old opset's optimizer) straight onto descriptor 2
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            onnx_logits = session.run(["logits"], {"pixel_values": x.numpy()})[0]
    except Exception as e:  # onnxruntime's error types (Fail, InvalidGraph, NotImplemented...) share no public base
        raise HfMedtlError(f"{name}: onnxruntime cannot run the export ({_first_line(e)}); try another "
                           f"{OPSETS}") from None
    diff = float(np.abs(core.probabilities(onnx_logits, is_multi_label(model)) - torch_probs).max())
    if not diff <= ATOL:
        raise HfMedtlError(f"{name}: onnxruntime's probabilities differ from PyTorch's by {diff:.2e} "
                           f"(> {ATOL:g}) on {len(images)} image(s)")
    return diff


def require_export_packages() -> None:
    """One line naming the install command when onnx or onnxruntime is missing (they are the [export] extra)."""
    import importlib

    missing = []
    for package in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise HfMedtlError(f"export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           f"not installed: {INSTALL}")


def _destination(out: str | Path, opset: int) -> Path:
    """``out`` checked before any work: an opset in range, a file name (not a folder) whose folder can exist."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise HfMedtlError(f"--opset {opset} is not supported: the exporter writes {OPSETS}")
    out = Path(out)
    if out.is_dir():
        raise HfMedtlError(f"--onnx {out} is a folder; name the file to write, e.g. {out / 'model.onnx'}")
    from hf_medtl.outputs import check_destination

    return check_destination(out, "--onnx")  # an ancestor that is a file, no permission, a read-only disk


@contextlib.contextmanager
def _silenced():
    """Nothing the exporter prints reaches the console: on failure it dumps the whole TorchScript graph from C++
    straight onto file descriptor 1, and it warns about deprecation; the user gets one line saying what to change.
    (Redirects the process's descriptors 1 and 2: export runs alone, from the command line.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _write_onnx(path: Path, model, processor, classes, model_dir, opset: int) -> None:
    """The ONNX graph with its metadata, at ``path``."""
    import onnx
    import torch

    from hf_medtl.data.transforms import preprocessing_from_processor
    from hf_medtl.inference.core import Logits

    h, w = preprocessing_from_processor(processor).size
    dummy = torch.zeros(2, 3, h, w)
    # The TorchScript exporter (dynamo=False): deprecated, but present in the pinned torch and twice as fast as the
    # torch.export one on CPU for these graphs; both give the same probabilities here (checked after either way).
    try:
        with _silenced():
            torch.onnx.export(Logits(model).eval(), (dummy,), str(path), input_names=["pixel_values"],
                              output_names=["logits"], opset_version=opset, dynamo=False, verbose=False,
                              dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
    except OSError:
        raise
    except Exception as e:  # an operator without a form at this opset, among others: its first line says which
        raise HfMedtlError(f"the ONNX exporter cannot write this model at --opset {opset} ({_first_line(e)}); "
                           f"try another {OPSETS}") from None
    graph = onnx.load(str(path))
    meta = {"hf_medtl.preprocessing": json.dumps(preprocessing_metadata(processor, model)),
            "hf_medtl.labels": json.dumps(classes), "hf_medtl.source": Path(model_dir).resolve().name}
    for key, value in meta.items():
        graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(graph, str(path))


def _check_images(served, check_inputs, max_check: int) -> list:
    """Up to ``max_check`` images of ``check_inputs``, read as the run read its files."""
    from hf_medtl.data.decode import DecodeError
    from hf_medtl.inference.predict import collect_inputs

    files, _ = collect_inputs(check_inputs)
    images = []
    for path in files[:max_check]:
        try:
            images.append(served.decode(path))
        except DecodeError as e:
            logger.warning(f"{path}: unreadable ({e}); not used for the check")
    if not images:
        raise HfMedtlError(f"no readable image among {', '.join(map(str, check_inputs))} to check the export on")
    return images


def export_onnx(model_dir: str | Path, out: str | Path, check_inputs, opset: int = DEFAULT_OPSET,
                max_check: int = MAX_CHECK, allow_pickle_weights: bool = False, trust_remote_code: bool = False) -> dict:
    """Write ``out`` (ONNX, dynamic batch) once it is checked on up to ``max_check`` images of ``check_inputs``:
    written to a temporary sibling, checked there, renamed onto ``out``; any failure leaves ``out`` untouched."""
    from hf_medtl.inference import core

    require_export_packages()
    out = _destination(out, opset)
    served = core.load(model_dir, None, allow_pickle_weights, trust_remote_code)
    # The model as the run served it: a run whose metrics averaged over TTA views is exported with those views
    # baked into the graph, so that the ONNX file gives the probabilities `hf-medtl predict` gives (its metadata's
    # views_inside says so; callers add no flip).
    model, processor, classes = served.views_inside(), served.processor, served.classes
    images = _check_images(served, check_inputs, max_check)
    # Same folder, so the rename is atomic; hidden and named per process, so no reader mistakes it for OUT.
    tmp = temporary_sibling(out)
    try:
        _write_onnx(tmp, model, processor, classes, model_dir, opset)
        diff = check_onnx(tmp, model, processor, images, name=out)
        os.replace(tmp, out)
    except OSError as e:  # a full disk, a read-only folder
        raise HfMedtlError(f"--onnx {out}: cannot write it ({e.strerror or e}); nothing was written") from None
    except HfMedtlError as e:  # the exporter or the check refused the file: say that OUT was left as it was
        raise HfMedtlError(f"{e}; nothing was written") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (a read-only folder: the real error above is the one to report)
            pass
    return {"path": str(out), "images_checked": len(images), "max_abs_diff": diff, "labels": classes}
