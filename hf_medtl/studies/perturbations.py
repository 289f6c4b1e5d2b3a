"""Graded image corruptions in the MedMNIST-C / ImageNet-C manner, applied to the decoded 8-bit RGB image
(hf_medtl.data.decode) before the saved processor resizes and normalises it. Severity 0 returns the image
unchanged; 1..5 grow harsher. Sizes that act in pixels (blur radius) scale with the image, so that a 28-px
MedMNIST image and a 512-px slice are blurred alike."""
from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from hf_medtl.config.commands import SEVERITIES  # noqa: F401 (the severities `study robustness` offers)
# The parameter of each perturbation at severity 0..5 (docs/studies.md's robustness table repeats these).
LEVELS = {
    "gaussian_noise": (0.0, 0.04, 0.08, 0.12, 0.18, 0.26),  # sd on the 0..1 intensity scale
    "blur": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),  # Gaussian radius in pixels of a 224-px image
    "contrast": (1.0, 0.8, 0.6, 0.4, 0.3, 0.2),  # contrast factor (1: unchanged)
    "brightness": (1.0, 1.15, 1.3, 1.45, 1.6, 1.75),  # brightness factor
    "jpeg": (None, 80, 60, 40, 20, 10),  # JPEG quality
    "rotation": (0.0, 3.0, 6.0, 9.0, 12.0, 15.0),  # degrees, counter-clockwise
    "downsample": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),  # shrink by this factor, then back to the original size
}


def _noise(img: Image.Image, sd: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64) / 255.0
    rng = np.random.default_rng(zlib.crc32(arr.tobytes()))  # the same noise for the same image: reproducible
    return Image.fromarray((np.clip(arr + rng.normal(0.0, sd, arr.shape), 0, 1) * 255).round().astype(np.uint8))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _downsample(img: Image.Image, factor: float) -> Image.Image:
    small = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(small, Image.BILINEAR).resize(img.size, Image.BILINEAR)


def perturb(img: Image.Image, name: str, severity: int) -> Image.Image:
    """``img`` under perturbation ``name`` at ``severity`` (0: the image itself)."""
    if name not in LEVELS:
        raise ValueError(f"unknown perturbation '{name}'; one of {', '.join(LEVELS)}")
    if severity == 0:
        return img
    v = LEVELS[name][severity]
    if name == "gaussian_noise":
        return _noise(img, v)
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(v * min(img.size) / 224))
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(v)
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(v)
    if name == "jpeg":
        return _jpeg(img, v)
    if name == "rotation":
        return img.rotate(v, resample=Image.BILINEAR)
    return _downsample(img, v)
