"""Decoding any supported medical image into an 8-bit RGB PIL image, with one documented rule per format.

- 8-bit L / RGB / RGBA / LA / P / CMYK / 1: converted to RGB by PIL (alpha is dropped).
- 16-bit or 32-bit grayscale (PNG/TIFF modes I;16, I, F; MedMNIST arrays that are not uint8): percentile
  windowing, the 0.5th..99.5th percentile mapped linearly onto 0..255 and clipped.
- DICOM (.dcm, or the DICM preamble): Rescale Slope/Intercept applied; the first Window Center/Width when
  present, else percentile windowing; MONOCHROME1 inverted so that bright means dense as in MONOCHROME2.
  Multi-frame files are refused (export slices first). Patient attributes are never read into a message.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DICOM_EXTENSIONS = {".dcm", ".dicom"}
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


class DecodeError(Exception):
    """A file that is not a usable image; the message is the reason, for data_report.json."""


def window(arr: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map [low, high] (default: the 0.5th and 99.5th percentiles) linearly onto uint8 0..255."""
    arr = arr.astype(np.float64)
    if low is None or high is None:
        low, high = np.percentile(arr, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        return np.zeros(arr.shape, np.uint8) if arr.max() <= low else np.full(arr.shape, 255, np.uint8)
    return np.clip((arr - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = window(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr).convert("RGB")


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def decode_dicom(path: Path) -> Image.Image:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken or compressed files
        raise DecodeError(f"unreadable DICOM ({type(e).__name__})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(f"multi-frame DICOM ({frames} frames); export single slices")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        return from_array(arr)
    arr = arr.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        out = window(arr, c - w / 2, c + w / 2)
    else:
        out = window(arr)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out).convert("RGB")


def decode(source) -> Image.Image:
    """An RGB image from a file path, an in-memory array or PIL image; DecodeError with the reason otherwise."""
    if isinstance(source, np.ndarray):
        return from_array(source)
    if isinstance(source, Image.Image):
        return from_array(np.asarray(source)) if source.mode in ("I;16", "I", "F") else source.convert("RGB")
    path = Path(source)
    try:
        if path.stat().st_size == 0:
            raise DecodeError("zero-byte file")
        if is_dicom(path):
            return decode_dicom(path)
        with Image.open(path) as img:
            img.load()  # forces the full decode: truncated files fail here, not in training
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return from_array(np.asarray(img))
            return img.convert("RGB")
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except Image.DecompressionBombError:
        raise DecodeError("image too large (decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "not an image" if "cannot identify" in str(e) else f"corrupt or truncated ({str(e).splitlines()[0][:80]})"
        raise DecodeError(reason) from None
