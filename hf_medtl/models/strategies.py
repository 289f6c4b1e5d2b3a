"""Fine-tuning strategies: which parameters train (full, linear probe, the last k stages, gradual unfreezing),
the backbone's own stages they are counted in, and the optimizer's parameter groups (discriminative LRs).

A stage is the backbone's own grouping, never a count of tensors: timm's ``group_matcher(coarse=True)`` (the
stem, each block stage, the final conv/norm), or an HF model's (encoder's) ``stages`` / ``layer`` / ``layers``
(the embeddings are the first stage; norms and poolers after the encoder belong to the last one).
"""
from __future__ import annotations

import logging
from typing import Optional

from torch import nn

from hf_medtl.models.heads import ModelError, classifier_head
from hf_medtl.models import lora
from hf_medtl.models.modeling_medtl import MedtlForImageClassification

logger = logging.getLogger("hf_medtl")


def head_parameter_names(model) -> set[str]:
    head = {id(p) for p in classifier_head(model).parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head}


def _timm_stages(timm_model, prefix: str, head: set[str]) -> list[list[str]]:
    from timm.models._manipulate import group_parameters

    groups = group_parameters(timm_model, timm_model.group_matcher(coarse=True))
    stages = [[prefix + n for n in names if prefix + n not in head] for _, names in sorted(groups.items())]
    return [s for s in stages if s]


BLOCK_LISTS = ("encoder.stages", "encoder.layer", "encoder.layers", "stages", "layers", "layer")


def _attr(module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
    return module


def _hf_stages(model, prefix: str, head: set[str]) -> list[list[str]]:
    base = model.base_model
    base_prefix = prefix + (model.base_model_prefix + "." if base is not model else "")
    block_key = next((k for k in BLOCK_LISTS if isinstance(_attr(base, k), nn.ModuleList)), None)
    if block_key is None:
        raise ModelError(f"{type(model).__name__}: hf_medtl does not know its stages (no encoder stages/layers); "
                         "use finetune_strategy 'full' or 'linear_probe'")
    return _grouped(base, base_prefix, block_key, head)


def _encoder_stages(encoder, prefix: str, head: set[str]) -> list[list[str]]:
    """An AutoModel encoder's stages: all of it is backbone (DINOv3's base_model is only its inner layer stack, its
    embeddings and final norm sit beside it), grouped by its outermost list of layers, wherever that list sits."""
    names = [n for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in
             ("stages", "layer", "layers", "blocks")]
    if not names:
        raise ModelError(f"{type(encoder).__name__}: hf_medtl does not know its stages (no list of layers); "
                         "use finetune_strategy 'full' or 'linear_probe'")
    return _grouped(encoder, prefix, min(names, key=lambda n: n.count(".")), head)


def _grouped(base, base_prefix: str, block_key: str, head: set[str]) -> list[list[str]]:
    """The stem (before the blocks), one stage per block, what follows the blocks joined to the last stage."""
    blocks = _attr(base, block_key)
    stem, stages, post = [], [[] for _ in blocks], []
    for name, _ in base.named_parameters():
        full = base_prefix + name
        if full in head:
            continue
        if name.startswith(block_key + "."):
            stages[int(name[len(block_key) + 1:].split(".")[0])].append(full)
        elif not any(stages):
            stem.append(full)
        else:
            post.append(full)
    stages[-1] += post
    return [s for s in [stem] + stages if s]


def backbone_stages(model) -> list[list[str]]:
    """Parameter names of the backbone (head excluded), grouped into its stages, input side first."""
    head = head_parameter_names(model)
    if isinstance(model, MedtlForImageClassification) and getattr(model.config, "encoder", False):
        return _encoder_stages(model.backbone.encoder, "backbone.encoder.", head)  # the AutoModel in the wrapper
    if isinstance(model, MedtlForImageClassification):
        inner = model.backbone
        prefix = "backbone."
    else:
        inner, prefix = model, ""
    if hasattr(inner, "timm_model"):
        return _timm_stages(inner.timm_model, prefix + "timm_model.", head)
    return _hf_stages(inner, prefix, head)


def stages_training(model_args, n_stages: int, epoch: int) -> int:
    """How many of the last backbone stages train during (1-based) ``epoch``."""
    s = model_args.finetune_strategy
    if s == "full":
        return n_stages
    if s in ("linear_probe", "knn"):
        return 0
    start = model_args.trainable_stages if model_args.trainable_stages is not None else (1 if s == "partial" else 0)
    if s == "gradual":
        start += sum(1 for e in model_args.unfreeze_at_epochs if e <= epoch)
    return min(start, n_stages)


def set_trainable(model, stages: list[list[str]], k: int) -> int:
    """Head plus the last ``k`` stages train, everything else is frozen; the number of trainable parameters."""
    train = head_parameter_names(model) | {n for s in (stages[len(stages) - k:] if k else []) for n in s}
    for name, p in model.named_parameters():
        p.requires_grad_(name in train)
    return trainable_parameters(model)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_backbone(model) -> None:
    """Train only the head: every other parameter stops receiving gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in classifier_head(model).parameters():
        p.requires_grad_(True)


def apply_strategy(model, model_args, epoch: int = 1) -> int:
    """requires_grad as the strategy says for ``epoch``; returns the number of trainable parameters."""
    if model_args.finetune_strategy == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return trainable_parameters(model)
    if model_args.finetune_strategy == "knn":  # nothing trains: its head is a bank of features (training/knn.py)
        for p in model.parameters():
            p.requires_grad_(False)
        return 0
    if model_args.finetune_strategy == "linear_probe":
        freeze_backbone(model)
        return trainable_parameters(model)
    if lora.applies(model_args):  # adapters injected once, when the model is built (merged after training)
        return lora.inject(model, model_args)
    stages = backbone_stages(model)
    k = model_args.trainable_stages
    if k is not None and not 0 <= k <= len(stages):
        raise ModelError(f"trainable_stages {k}: this backbone has {len(stages)} stages; choose 0..{len(stages)}")
    return set_trainable(model, stages, stages_training(model_args, len(stages), epoch))


def keep_frozen_in_eval_mode(model):
    """Frozen parts run in inference mode while the rest trains (BatchNorm statistics and dropout frozen too,
    as Keras' ``trainable = False``): a forward pre-hook puts every wholly frozen module in eval mode."""
    def hook(module, args):
        if not module.training:
            return
        for m in module.modules():
            params = list(m.parameters(recurse=True))
            if m is not module and params and not any(p.requires_grad for p in params):
                m.eval()

    return model.register_forward_pre_hook(hook)


def param_groups(model, lr: float, weight_decay: float, decay_names: set[str], backbone_lr_multiplier: float = 1.0,
                 layer_decay: Optional[float] = None) -> list[dict]:
    """Optimizer groups holding every parameter (frozen ones too, so that gradual unfreezing needs no new group):
    the head at ``lr``; backbone stage i of S at ``lr * backbone_lr_multiplier * layer_decay ** (S - i)``
    (timm's ``param_groups_layer_decay``: the stage nearest the head decays least); each split by weight decay."""
    head = head_parameter_names(model)
    stages = backbone_stages(model) if layer_decay is not None else None
    scale = {n: 1.0 for n in head}
    if stages is not None:
        for i, names in enumerate(stages):
            for n in names:
                scale[n] = backbone_lr_multiplier * layer_decay ** (len(stages) - i)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        s = scale.get(name, backbone_lr_multiplier)
        wd = weight_decay if name in decay_names else 0.0
        g = groups.setdefault((s, wd), {"params": [], "lr": lr * s, "weight_decay": wd, "lr_scale": s})
        g["params"].append(p)
    return list(groups.values())
