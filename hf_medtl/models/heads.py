"""The classification head: which module it is, how it is initialised, and hf_medtl's own heads (bottleneck,
dropout) around any backbone (hf_medtl/models/modeling_medtl.py)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from hf_medtl.errors import HfMedtlError
from hf_medtl.models.modeling_ensemble import (ENSEMBLE_TYPE, MedtlEnsembleConfig,
                                               MedtlEnsembleForImageClassification)
from hf_medtl.models.modeling_medtl import (MODEL_TYPE, MedtlClassifierConfig, MedtlForImageClassification,
                                            strip_classifier)

logger = logging.getLogger("hf_medtl")


class ModelError(HfMedtlError):
    pass


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModelForImageClassification (and so ``pipeline()``) know hf_medtl's model class
    in this process, and have ``save_pretrained`` write its code with an ``auto_map`` for everywhere else."""
    from transformers import AutoConfig, AutoModelForImageClassification

    for model_type, config_class, model_class in ((MODEL_TYPE, MedtlClassifierConfig, MedtlForImageClassification),
                                                  (ENSEMBLE_TYPE, MedtlEnsembleConfig, MedtlEnsembleForImageClassification)):
        try:
            AutoConfig.register(model_type, config_class)
            AutoModelForImageClassification.register(config_class, model_class)
        except ValueError:  # already registered
            pass
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForImageClassification")


def classifier_head(model) -> nn.Module:
    """The module that maps pooled features to class logits (with hf_medtl's head: bottleneck + classifier)."""
    if isinstance(model, MedtlForImageClassification):
        return nn.ModuleList([m for m in (model.bottleneck, model.classifier) if m is not None])
    if hasattr(model, "timm_model"):
        return model.timm_model.get_classifier()
    head = getattr(model, "classifier", None) or getattr(model, "head", None)
    if head is None:
        raise ModelError(f"{type(model).__name__}: no 'classifier' or 'head' module; use finetune_strategy 'full'")
    return head


def _lecun_normal(w: torch.Tensor) -> None:
    from timm.layers import lecun_normal_

    lecun_normal_(w)


HEAD_INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "lecun_normal": _lecun_normal,
    "orthogonal": nn.init.orthogonal_,
    "trunc_normal": lambda w: nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04),
}
HEAD_INITS["he"] = HEAD_INITS["kaiming_normal"]


@torch.no_grad()
def init_head(model, how: str) -> None:
    """Initialise every Linear of the head: weights by ``how``, biases to zero; 'default' keeps the
    backbone family's own initialisation."""
    if how == "default":
        return
    if how not in HEAD_INITS:
        raise ModelError(f"head_init '{how}': choose one of default, {', '.join(HEAD_INITS)}")
    for module in classifier_head(model).modules():
        if isinstance(module, nn.Linear):
            HEAD_INITS[how](module.weight)
            if module.bias is not None:
                module.bias.zero_()


def head_config(backbone_config, model_args, **kwargs) -> MedtlClassifierConfig:
    """hf_medtl's head as the recipe sets it, around ``backbone_config``; ``kwargs``: labels, encoder pooling."""
    return MedtlClassifierConfig(
        backbone_config=backbone_config, head=model_args.head, bottleneck_dim=model_args.bottleneck_dim,
        head_dropout=model_args.head_dropout, l1_feature_reg=model_args.l1_feature_reg,
        l2_feature_reg=model_args.l2_feature_reg, **kwargs)


def with_medtl_head(model, model_args):
    """``model`` (a classifier with its new head) rebuilt around hf_medtl's head: its pretrained backbone
    weights are kept, its last Linear replaced by [bottleneck W ->] dropout -> classifier."""
    config = model.config
    medtl_config = head_config(config, model_args, num_labels=config.num_labels, id2label=config.id2label,
                               label2id=config.label2id, problem_type=config.problem_type)
    if hasattr(config, "pretrained_cfg"):  # TimmWrapperImageProcessor reads it from the top of config.json
        medtl_config.pretrained_cfg = config.pretrained_cfg
        medtl_config.image_processor_type = "TimmWrapperImageProcessor"  # AutoImageProcessor's pointer to it
    wrapped = MedtlForImageClassification(medtl_config)
    strip_classifier(model)
    missing, unexpected = wrapped.backbone.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        raise ModelError(f"{type(model).__name__}: its weights do not fit hf_medtl's head "
                         f"({(missing + unexpected)[:3]})")
    what = f"bottleneck head ({model_args.bottleneck_dim} units)" if model_args.head == "bottleneck" else "linear head"
    logger.info(f"hf_medtl {what} with dropout {model_args.head_dropout} on {type(model).__name__}")
    return wrapped
