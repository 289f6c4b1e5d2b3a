"""`hf-medtl predict`: class probabilities of a saved model for new images, folders and DICOM files.

Every image goes through the toolkit's own decoding (hf_medtl.data.decode: 16-bit windowing, DICOM LUTs, EXIF)
and the saved image processor (the evaluation transform), so a prediction sees the pixels the model was scored
on. A run evaluated with flip TTA (`tta: hflip`) is served with it: predict and the app average the image's and
its mirror's probabilities, as the run's reported metrics did; `--tta` averages over flips and small rotations.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hf_medtl.config.commands import PredictOptions
from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float] = field(default_factory=dict)  # every label, in the model's order
    error: str | None = None  # why the file could not be predicted
    views: tuple = ("identity",)  # the TTA views its probabilities averaged over

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        return ranked[:k] if k else ranked


def collect_inputs(inputs) -> tuple[list[Path], bool]:
    """(files to predict, whether a folder was given). Folders are searched recursively, following links, for image
    files by extension and for DICOM files by content (PACS names them IM0001, without an extension); named files are
    kept whatever their suffix. Nothing is left out silently: a dangling or looping link, and a folder link back to
    a folder above it, are kept so that they are reported as unreadable."""
    files, folder = [], False
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folder = True
            files += _walk(path)
        else:
            files.append(path)
    if not files:
        raise HfMedtlError(f"no images found in {', '.join(map(str, inputs))}")
    return files, folder


def _walk(root: Path) -> list[Path]:
    """The image candidates under ``root`` (hidden files and folders excepted), sorted; links followed once."""
    import os

    from hf_medtl.data.types import is_image_name

    found, seen = [], {os.path.realpath(root)}
    for here, dirs, names in os.walk(root, followlinks=True):
        here = Path(here)
        for d in list(dirs):
            real = os.path.realpath(here / d)
            if d.startswith(".") or real in seen:
                dirs.remove(d)
                if not d.startswith("."):
                    found.append(here / d)  # a loop: reported, not followed
            seen.add(real)
        for name in names:
            p = here / name
            if not name.startswith(".") and (is_image_name(p) or not p.exists() or _is_dicom(p)):
                found.append(p)
    return sorted(found)


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def predict(model_dir: str | Path, inputs, tta=None, batch_size: int = PredictOptions.batch_size, cam_dir: str | Path | None = None,
            allow_pickle_weights: bool = False, trust_remote_code: bool = False,
            max_image_pixels: int | None = None, data_keys: dict | None = None) -> list[Prediction]:
    """Probabilities of every label for each image of ``inputs`` (files and folders), in input order.
    An unreadable file gets a Prediction with ``error`` set (and a log line); the others are still predicted.
    ``tta``: None -> the views the run was evaluated with (run_tta_views); True -> TTA_VIEWS; False -> none.
    ``cam_dir``: also write a Grad-CAM overlay PNG per image for its top class (hf_medtl.inference.explain).
    ``data_keys``: nifti_slice / nifti_axis for 3-D NIfTI volumes (default: the run's own, from its recipe.json)."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from hf_medtl.data.decode import DecodeError
    from hf_medtl.inference import core

    served = core.load(model_dir, tta, allow_pickle_weights, trust_remote_code,
                       {**(data_keys or {}), "max_image_pixels": max_image_pixels})
    files, folder = collect_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
    results = []
    # While the bar is open, hf_medtl's lines (an unreadable file) go through tqdm.write: above the bar, never into it.
    with tqdm(total=len(files), desc="predict", unit="img", disable=not folder, leave=False) as bar, \
            logging_redirect_tqdm(loggers=[logger], tqdm_class=tqdm):
        for start in range(0, len(files), batch_size):
            chunk, images, rows = files[start:start + batch_size], [], []
            for path in chunk:
                try:
                    if path.is_dir():  # a folder link back to a folder above it
                        raise DecodeError("a link to a folder above it (a loop); not followed")
                    images.append(served.decode(path))
                    rows.append(Prediction(str(path), views=served.views))
                except DecodeError as e:
                    logger.warning(f"{path}: unreadable ({e}); skipped")
                    results.append(Prediction(str(path), error=str(e), views=served.views))
            if images:
                for row, probs in zip(rows, served.probabilities(images)):
                    row.probabilities = {c: float(p) for c, p in zip(served.classes, probs)}
                if cam_dir is not None:
                    from hf_medtl.inference.explain import write_overlays

                    write_overlays(served, images, [r.top(1)[0] for r in rows], [Path(r.path) for r in rows], cam_dir)
                results += rows
            bar.update(len(chunk))
    order = {str(p): i for i, p in enumerate(files)}
    return sorted(results, key=lambda r: order[r.path])


def format_predictions(predictions: list[Prediction], fmt: str = PredictOptions.format,
                       top_k: int = PredictOptions.top_k) -> str:
    """The predictions as a Markdown table (top-k), CSV or JSON (every label), with the views they averaged."""
    views = list(predictions[0].views if predictions else ("identity",))
    if fmt == "json":
        return json.dumps([{"path": p.path, "prediction": p.top(1)[0][0] if p.probabilities else None,
                            "probabilities": p.probabilities, "tta": views, "error": p.error}
                           for p in predictions], indent=2) + "\n"
    labels = list(next((p.probabilities for p in predictions if p.probabilities), {}))
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "prediction", *labels, "tta", "error"])
        for p in predictions:
            w.writerow([p.path, p.top(1)[0][0] if p.probabilities else "",
                        *(f"{p.probabilities[c]:.6f}" if p.probabilities else "" for c in labels),
                        "+".join(views), p.error or ""])
        return out.getvalue()
    k = min(top_k, len(labels)) or 1
    lines = ([f"TTA: probabilities averaged over {', '.join(views)}", ""] if len(views) > 1 else []) + [
        "| image | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |", "|---" * (k + 1) + "|"]
    for p in predictions:
        cells = ([f"{c} ({v:.1%})" for c, v in p.top(k)] if p.probabilities
                 else [f"unreadable: {p.error}"] + [""] * (k - 1))
        lines.append(f"| {p.path} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
