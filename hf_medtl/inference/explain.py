"""Saliency: Grad-CAM maps (the grad-cam package, pytorch-grad-cam) for any saved classifier, and the overlay PNGs
that `hf-medtl predict --cam` and `hf-medtl evaluate --cam N` write.

Which layer: for a CNN, the last layer whose output is a feature map (batch, channels, h, w) with h x w > 1 (for
timm's EfficientNet: ``bn2`` after ``conv_head``; for ResNet, the last stage; at inputs so small that the last map
is 1 x 1, an earlier block's). For a vision transformer (ViT,
DeiT, BEiT; HF or timm), the first LayerNorm of the last block, whose patch tokens are reshaped to a grid (class
and distillation tokens dropped): the Grad-CAM-for-ViT recipe of pytorch-grad-cam's documentation. The map is
computed at the model's input size and resized to the image's own size: the processor resizes the whole image
without cropping, so the two align.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from hf_medtl.errors import HfMedtlError
from hf_medtl.inference.core import Logits
from hf_medtl.models.modeling_ensemble import ENSEMBLE_TYPE


def _tokens_to_grid(tokens):
    """(batch, tokens, dim) -> (batch, dim, s, s), dropping the leading class/distillation tokens."""
    n = tokens.shape[1]
    prefix = next((k for k in range(0, 5) if math.isqrt(n - k) ** 2 == n - k), None)
    if prefix is None:
        raise HfMedtlError(f"cannot lay {n} tokens out on a square grid for Grad-CAM")
    s = math.isqrt(n - prefix)
    return tokens[:, prefix:, :].reshape(tokens.shape[0], s, s, tokens.shape[2]).permute(0, 3, 1, 2)


def target_layer(model, input_size: tuple[int, int]):
    """(layer, reshape_transform or None) for Grad-CAM, found from one forward pass's output shapes."""
    seen, hooks = [], []
    for module in model.modules():
        if module is model:
            continue
        hooks.append(module.register_forward_hook(
            lambda m, _, out: seen.append((m, tuple(out.shape))) if isinstance(out, torch.Tensor) else None))
    try:
        with torch.no_grad():
            model(pixel_values=torch.zeros(1, 3, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    norms = [m for m, shape in seen if isinstance(m, nn.LayerNorm) and len(shape) == 3]
    if len(norms) >= 3:  # transformer: [..., last block's norm before attention, its norm after, final norm]
        return norms[-3], _tokens_to_grid
    maps = [(m, s) for m, s in seen if len(s) == 4]
    if not maps:
        raise HfMedtlError(f"{type(model).__name__}: no feature-map layer found for Grad-CAM")
    spatial = [m for m, s in maps if s[2] * s[3] > 1]
    return (spatial or [m for m, _ in maps])[-1], None


def cam_maps(model, pixel_values, class_ids: list[int]) -> np.ndarray:
    """(batch, h, w) Grad-CAM maps in [0, 1] at the input size, one per image for its class in ``class_ids``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from hf_medtl.inference import core

    pixel_values = pixel_values.to(next(model.parameters()).device)
    served = tuple(model.config.views) if getattr(model, "serve_views", False) else ("identity",)
    if len(served) > 1:  # views inside the forward: each view's map on the view-free model, brought back, averaged
        with core.views_off(model):
            return core.average([core.unview(torch.from_numpy(cam_maps(model, core.view(pixel_values, v), class_ids)),
                                             v).numpy() for v in served])
    # An ensemble: the gradient of its averaged output at every member's layer, the members' maps averaged
    # (pytorch-grad-cam's multi-layer mean); the members of one recipe share an architecture and its reshape.
    parts = model.members if getattr(model.config, "model_type", None) == ENSEMBLE_TYPE else [model]
    found = [target_layer(m, tuple(pixel_values.shape[-2:])) for m in parts]
    layers, reshape = [layer for layer, _ in found], found[0][1]
    with GradCAM(model=Logits(model), target_layers=layers, reshape_transform=reshape) as cam:
        maps = cam(input_tensor=pixel_values, targets=[ClassifierOutputTarget(int(c)) for c in class_ids])
    return np.clip(np.nan_to_num(maps), 0.0, 1.0)


def image_cams(model, processor, images: list[Image.Image], class_ids: list[int], views=("identity",)) -> list[np.ndarray]:
    """One map per image at that image's own size (height, width), values in [0, 1]: with TTA ``views`` the mean of
    each view's map brought back onto the image, as the probabilities shown are the mean over those views."""
    from hf_medtl.inference import core

    x, black = core.pixels(processor, images), core.black_of(processor)
    maps = core.average([core.unview(torch.from_numpy(cam_maps(model, core.view(x, v, black), class_ids)), v).numpy()
                         for v in views])
    return [np.clip(np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(im.size, Image.BILINEAR)), 0, 1)
            for m, im in zip(maps, images)]


def blend(image: Image.Image, cam: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(image, image with the jet-coloured map over it), as float RGB arrays at most ``size`` px wide."""
    import matplotlib

    scale = size / max(image.size)
    shown = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                        Image.BILINEAR)
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(shown.size, Image.BILINEAR))
    rgb = np.asarray(shown, dtype=np.float32) / 255.0
    return rgb, np.clip(0.55 * rgb + 0.45 * matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3], 0, 1)


def save_overlay(image: Image.Image, cam: np.ndarray, title: str, path: str | Path) -> Path:
    """A PNG: the image, the heat-map overlay with a colour bar, and ``title`` (class and probability)."""
    import matplotlib

    from hf_medtl.evaluation.plots import pyplot

    plt = pyplot()
    rgb, overlay = blend(image, cam)
    cmap = matplotlib.colormaps["jet"]
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2), dpi=100)
    for ax, panel, name in zip(axes, (rgb, overlay), ("image", "Grad-CAM")):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    colours = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap)
    fig.colorbar(colours, ax=axes[1], fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_overlays(served, images, predictions: list[tuple[str, float]], names: list[Path],
                   out_dir: str | Path, titles: list[str] | None = None) -> list[Path]:
    """Overlay PNGs for (label, probability) ``predictions`` of ``images`` by the served model (hf_medtl.inference.
    core.load; probabilities over its TTA views, whose maps are averaged likewise); file names from ``names``."""
    views = served.views
    cams = image_cams(served.model, served.processor, images,
                      [served.classes.index(label) for label, _ in predictions], views)
    out_dir, written = Path(out_dir), []
    for i, (image, cam, (label, p), name) in enumerate(zip(images, cams, predictions, names)):
        path = out_dir / f"{Path(name).stem}_cam.png"
        while path in written or path.exists():
            path = out_dir / f"{Path(name).stem}_{i}_cam.png"
            i += 10_000
        tta = f", mean of {len(views)} views" if len(views) > 1 else ""
        title = titles[len(written)] if titles else f"{Path(name).name}: {label} ({p:.1%}{tta})"
        written.append(save_overlay(image, cam, title, path))
    return written


def confident_errors(probs: np.ndarray, labels: np.ndarray, n: int) -> dict[int, list[int]]:
    """For each true class, the indices of its (at most) ``n`` wrong predictions made with the highest confidence."""
    pred = probs.argmax(1)
    out = {}
    for c in np.unique(labels):
        wrong = np.nonzero((labels == c) & (pred != c))[0]
        out[int(c)] = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n].tolist()
    return out


def error_overlays(served, samples, probs, labels, n: int, out_dir) -> list[Path]:
    """`evaluate --cam N`: overlays of the N most confident errors of each class (the predicted class's map, over
    the views the probabilities averaged)."""
    from hf_medtl.data.decode import decode

    written, classes, max_pixels = [], served.classes, served.max_pixels
    for c, idx in confident_errors(probs, labels, n).items():
        if idx:
            images = [decode(samples[i].source, max_pixels) for i in idx]
            preds = [(classes[int(probs[i].argmax())], float(probs[i].max())) for i in idx]
            names = [Path(f"{classes[c]}_as_{label}_{k}") for k, (label, _) in enumerate(preds)]
            titles = [f"true {classes[c]}, predicted {label} ({p:.1%})" for label, p in preds]
            written += write_overlays(served, images, preds, names, Path(out_dir), titles)
    return written
