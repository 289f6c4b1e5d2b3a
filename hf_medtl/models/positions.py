"""A patch model (ViT, DeiT, ...) trained at another ``image_size`` than its config's: its learned position
embeddings are resized once, when the backbone is loaded, with the model's own interpolate_pos_encoding (bicubic
over the patch grid, as timm's resample_abs_pos_embed and the DINO/ViT papers do at a new resolution), and
config.image_size becomes the new size. The saved model then takes that size natively, so pipeline(), the ONNX
export and every hf_medtl command serve it without a flag that pipeline() could not pass.

A model whose size cannot change this way is probed with one image at the asked size before any training: one line
naming the sizes it takes instead of a traceback in the first step."""
from __future__ import annotations

import logging

import torch
from torch import nn

from hf_medtl.models.heads import ModelError

logger = logging.getLogger("hf_medtl")


def learned_positions(model):
    """The module holding learned absolute position embeddings over a patch grid, or None."""
    for m in model.modules():
        if isinstance(getattr(m, "position_embeddings", None), nn.Parameter) and \
                hasattr(m, "interpolate_pos_encoding") and hasattr(getattr(m, "patch_embeddings", None), "num_patches"):
            return m
    return None


def fit_image_size(model, image_size: int | None, name: str) -> None:
    """Make ``model`` take ``image_size`` x ``image_size`` images natively (see the module's docstring), or raise
    ModelError naming the sizes it takes."""
    config = model.config
    native = getattr(config, "image_size", None)
    if not image_size or not isinstance(native, int) or native == image_size:
        return
    emb = learned_positions(model)
    patch = getattr(config, "patch_size", None)
    if emb is not None and isinstance(patch, int):
        if image_size % patch:
            raise ModelError(f"image_size {image_size}: '{name}' splits images into {patch}-px patches; use a "
                             f"multiple of {patch} (e.g. {image_size // patch * patch or patch} or "
                             f"{(image_size // patch + 1) * patch})")
        _resize(emb, image_size, patch)
        config.image_size = image_size
        logger.info(f"'{name}': position embeddings interpolated from {native} to {image_size} px")
        return
    _probe(model, image_size, native, name)


def _resize(emb, image_size: int, patch: int) -> None:
    old = emb.patch_embeddings.num_patches
    prefix = emb.position_embeddings.shape[1] - old  # [CLS] (and DeiT's distillation token)
    new = (image_size // patch) ** 2
    dummy = torch.zeros(1, new + prefix, emb.position_embeddings.shape[-1])
    with torch.no_grad():
        table = emb.interpolate_pos_encoding(dummy, image_size, image_size)
    if table.shape[1] != new + prefix:  # a family whose interpolation keeps another layout: do not guess
        raise ModelError(f"image_size {image_size}: this model's position embeddings cannot be resized; use its "
                         "own size (image_size null)")
    emb.position_embeddings = nn.Parameter(table.contiguous(), requires_grad=emb.position_embeddings.requires_grad)
    emb.patch_embeddings.image_size = (image_size, image_size)
    if hasattr(emb, "image_size"):  # (newer transformers check the size here too)
        emb.image_size = (image_size, image_size)
    emb.patch_embeddings.num_patches = new


def _probe(model, image_size: int, native: int, name: str) -> None:
    channels = getattr(model.config, "num_channels", 3)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(pixel_values=torch.zeros(1, channels, image_size, image_size))
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"image_size {image_size}: '{name}' takes {native} × {native} px images only "
                         f"({str(e).splitlines()[0][:120]}); set image_size {native} or null") from None
    finally:
        model.train(was_training)
