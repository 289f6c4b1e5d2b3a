"""Encoders as backbones: a checkpoint that ``AutoModel`` loads but whose architecture has no image-classification
class in transformers (DINOv3, SigLIP / CLIP vision towers, ViT-MAE, ...), or any transformers encoder when the
recipe sets ``pooling``, gets hf_medtl's head on its pooled output (MedtlForImageClassification with
``encoder=True``, which saves and serves through ``pipeline()`` like every other hf_medtl head).

The pooled output's layout is measured here, once, on one blank image at the run's input size: whether the encoder
gives token sequences or feature maps, how many tokens come before the patches (CLS, registers), whether it has a
pooler_output, and the pooled width. No config field states these across families, and a wrong guess would pool
the wrong tokens silently.
"""
from __future__ import annotations

import logging

import torch

from hf_medtl.models.heads import ModelError, head_config, register_auto_classes
from hf_medtl.models.modeling_medtl import MODEL_TYPE, MedtlForImageClassification, encode, pool

logger = logging.getLogger("hf_medtl")


def encoder_config(name: str, model_args):
    """The checkpoint's config when it takes the encoder path (``pooling`` set, or no image-classification class
    for it in transformers), else None."""
    from transformers import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING, AutoConfig

    config = AutoConfig.from_pretrained(name, trust_remote_code=model_args.trust_remote_code)
    classifies = (type(config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING
                  or "AutoModelForImageClassification" in (getattr(config, "auto_map", None) or {}))
    if model_args.pooling is None and classifies:
        return None
    if config.model_type in ("timm_wrapper", MODEL_TYPE):  # their pooling is their own (timm's global_pool)
        raise ModelError(f"pooling '{model_args.pooling}': applies to transformers encoders, not to "
                         f"'{config.model_type}' checkpoints; leave pooling unset")
    if hasattr(config, "mask_ratio"):  # ViT-MAE masks 75% of the patches at random unless told otherwise
        config.mask_ratio = 0.0
    return config


def _patch_grid(config, size: int) -> int | None:
    patch = getattr(config, "patch_size", None)
    if patch is None:
        return None
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[-2:]
    return (size // ph) * (size // pw)


def _input_size(config, image_size: int | None) -> int:
    size = image_size or getattr(config, "image_size", None) or 224
    return size if isinstance(size, int) else int(tuple(size)[-1])


def _resolve(output, config, size: int, requested: str | None, name: str) -> tuple[str, int]:
    """(pooling, number of tokens before the patches) for the encoder's probe ``output``; a pooling it cannot
    give is a ModelError."""
    h = getattr(output, "last_hidden_state", None)
    has_pooler = getattr(output, "pooler_output", None) is not None
    if h is None or h.dim() not in (3, 4):
        if requested is None and has_pooler:
            return "pooler", 0
        raise ModelError(f"'{name}': hf_medtl cannot find its pooled output (no last_hidden_state of tokens or "
                         "feature maps" + (", and pooling is set)" if has_pooler else " and no pooler_output)"))
    if h.dim() == 4:
        if requested in (None, "mean"):
            return ("pooler" if requested is None and has_pooler else "mean"), 0
        raise ModelError(f"pooling '{requested}': '{name}' gives feature maps, which have no CLS token; use "
                         "pooling 'mean' (global average) or leave it unset")
    grid = _patch_grid(config, size)
    prefix = h.shape[1] - grid if grid is not None and 0 <= h.shape[1] - grid < h.shape[1] else None
    if requested is None:
        return ("pooler", 0) if has_pooler else ("cls" if prefix else "mean", prefix or 0)
    if prefix is None:
        raise ModelError(f"pooling '{requested}': hf_medtl cannot tell the patch tokens of '{name}' apart (no "
                         "patch_size in its config); leave pooling unset")
    if "cls" in requested and prefix == 0:
        raise ModelError(f"pooling '{requested}': '{name}' has no CLS token (all its {h.shape[1]} tokens are "
                         "patches); use pooling 'mean', or leave it unset" + (" (its pooler_output)" if has_pooler else ""))
    return requested, prefix


@torch.no_grad()
def _probe(encoder, config, image_size: int | None, requested: str | None, name: str) -> tuple[str, int, int]:
    """(pooling, prefix tokens, pooled width), from one forward pass of a blank image at the run's input size."""
    size = _input_size(config, image_size)
    pixels = torch.zeros(1, getattr(config, "num_channels", 3), size, size,
                         dtype=next(encoder.parameters()).dtype, device=next(encoder.parameters()).device)
    was_training = encoder.training
    try:
        output = encode(encoder.eval(), pixels)
    except Exception as e:  # a text model, a size the encoder refuses: what it says is the user's clue
        raise ModelError(f"'{name}': its encoder does not take a {size}-px image ({str(e).splitlines()[0][:160]})") from None
    finally:
        encoder.train(was_training)
    pooling, prefix = _resolve(output, config, size, requested, name)
    return pooling, prefix, pool(output, pooling, prefix).shape[1]


def load_encoder(name: str, config, model_args, labels: dict, image_size: int | None):
    """MedtlForImageClassification around the checkpoint's AutoModel (pretrained weights unless ``pretrained`` is
    off), pooled as the recipe says (default: its pooler_output, else the CLS token / the feature maps' mean)."""
    from transformers import AutoModel

    trust = model_args.trust_remote_code
    try:
        if model_args.pretrained:
            encoder = AutoModel.from_pretrained(name, config=config, trust_remote_code=trust,
                                                use_safetensors=None if model_args.allow_pickle_weights else True)
        else:
            encoder = AutoModel.from_config(config, trust_remote_code=trust)
    except ValueError as e:  # AutoModel knows no class for it either
        raise ModelError(f"'{name}': neither an image classifier nor an encoder in transformers "
                         f"({str(e).splitlines()[0][:160]})") from None
    register_auto_classes()  # save_pretrained writes the auto_map that pipeline() follows
    pooling, prefix, width = _probe(encoder, encoder.config, image_size, model_args.pooling, name)
    model = MedtlForImageClassification(head_config(encoder.config, model_args, encoder=True, pooling=pooling,
                                                    num_prefix_tokens=prefix, feature_dim=width, **labels))
    model.backbone.encoder.load_state_dict(encoder.state_dict())
    logger.info(f"{name}: {type(encoder).__name__} (no image-classification class, or pooling set) with hf_medtl's "
                f"{model_args.head} head on its pooled output ({pooling}, {width} features)")
    return model
