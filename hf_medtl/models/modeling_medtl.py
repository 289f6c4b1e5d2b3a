"""A backbone with hf_medtl's own classification head, as a transformers model class.

Seed 001's bottleneck compression head: pooled features z -> h = W^T z (k units) -> dropout -> V^T h + b, trained
with cross-entropy + l1 * ||h||_1 + l2 * ||h||_2^2 (batch means); or a linear head with dropout before it.
The backbone is a classifier with its last Linear removed, or (``encoder``) an AutoModel encoder pooled by
``pool`` (pooler_output, CLS token, mean of the patch tokens, or both) for architectures without a classifier.

Self-contained on purpose (torch and transformers only): ``save_pretrained`` copies this file beside the weights
with an ``auto_map`` in config.json, so that ``AutoModelForImageClassification`` and ``pipeline()`` load the
model with ``trust_remote_code=True`` where hf_medtl is not installed; ``import hf_medtl`` registers the classes
with the Auto* factories, which loads it without remote code.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

MODEL_TYPE = "hf_medtl_classifier"


class MedtlClassifierConfig(PretrainedConfig):
    model_type = MODEL_TYPE
    sub_configs = {"backbone_config": AutoConfig}
    keys_to_ignore_at_inference = ["features"]

    def __init__(self, backbone_config=None, head: str = "linear", bottleneck_dim: int = 256,
                 head_dropout: float = 0.0, l1_feature_reg: float = 0.0, l2_feature_reg: float = 0.0,
                 encoder: bool = False, pooling: Optional[str] = None, num_prefix_tokens: int = 0,
                 feature_dim: Optional[int] = None, knn_k: int = 1, knn_metric: str = "cosine",
                 knn_weights: str = "uniform", knn_size: int = 0, **kwargs):
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        self.backbone_config = backbone_config
        self.head, self.bottleneck_dim, self.head_dropout = head, bottleneck_dim, head_dropout
        self.l1_feature_reg, self.l2_feature_reg = l1_feature_reg, l2_feature_reg
        # encoder: backbone_config is an AutoModel's (no classification class), pooled as ``pooling`` says
        # ('pooler', 'cls', 'mean', 'cls+mean'); the token layout and width are measured once when the model is
        # built (hf_medtl/models/encoders.py), since no config field states them across families.
        self.encoder, self.pooling = encoder, pooling
        self.num_prefix_tokens, self.feature_dim = num_prefix_tokens, feature_dim
        # head 'knn': no weights, a bank of knn_size L2-normalised training features (buffers) voted on by the
        # knn_k nearest; the size is in the config so that the buffers exist before the weights are loaded.
        self.knn_k, self.knn_metric, self.knn_weights, self.knn_size = knn_k, knn_metric, knn_weights, knn_size
        super().__init__(**kwargs)


@dataclass
class MedtlClassifierOutput(ImageClassifierOutput):
    """logits, plus the head's representation h (the bottleneck, or the pooled features) that the feature
    regularisation penalises."""

    features: Optional[torch.FloatTensor] = None


def strip_classifier(model) -> int:
    """Replace a classification model's last Linear by Identity, so that its logits are the pooled features;
    return their width."""
    if hasattr(model, "timm_model"):
        model.timm_model.reset_classifier(0)
        return model.timm_model.num_features
    parent, name = model, "classifier" if hasattr(model, "classifier") else "head"
    head = getattr(model, name)
    if isinstance(head, nn.Sequential):  # e.g. ResNet's Flatten + Linear
        parent, name = head, str(len(head) - 1)
        head = head[-1]
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}: its classifier is {type(head).__name__}, not a Linear layer")
    setattr(parent, name, nn.Identity())
    return head.in_features


def pool(output, pooling: str, num_prefix_tokens: int) -> torch.Tensor:
    """An encoder's output pooled to one vector per image: its pooler_output; the CLS token; the mean of the
    patch tokens (after the CLS and register tokens; of the whole map for feature maps); or CLS and mean
    concatenated, as Dinov2ForImageClassification does."""
    if pooling == "pooler":
        return output.pooler_output.flatten(1)
    h = output.last_hidden_state
    if h.dim() == 4:  # (batch, channels, height, width): global average
        return h.mean((2, 3))
    cls, patches = h[:, 0], h[:, num_prefix_tokens:].mean(1)
    return {"cls": cls, "mean": patches, "cls+mean": torch.cat([cls, patches], 1)}[pooling]


def encode(encoder, pixel_values):
    """The encoder's output for ``pixel_values``; CLIP / SigLIP / ViT-MAE take another input size than their
    config's only when asked to interpolate their position embeddings (DINOv2 and DINOv3 always do)."""
    takes = inspect.signature(encoder.forward).parameters
    kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in takes else {}
    if "noise" in takes and getattr(encoder.config, "mask_ratio", None) == 0:
        # ViT-MAE shuffles its patches by random noise even when it masks none: increasing noise keeps their order,
        # so that the same image gives the same output to the last bit, without drawing from the RNG
        patch = encoder.config.patch_size
        n = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        kwargs["noise"] = torch.arange(n, device=pixel_values.device, dtype=torch.float32).expand(len(pixel_values), n)
    return encoder(pixel_values=pixel_values, **kwargs)


class PooledEncoder(nn.Module):
    """An AutoModel encoder whose pooled output stands in for a classifier's logits, so that everything that
    reads ``model.backbone(pixel_values=...).logits`` (the feature cache) treats both kinds of backbone alike."""

    def __init__(self, config: "MedtlClassifierConfig"):
        super().__init__()
        self.encoder = AutoModel.from_config(config.backbone_config)
        self.pooling, self.num_prefix_tokens = config.pooling, config.num_prefix_tokens

    def forward(self, pixel_values=None):
        pooled = pool(encode(self.encoder, pixel_values), self.pooling, self.num_prefix_tokens)
        return ImageClassifierOutput(logits=pooled)


def feature_penalty(h: torch.Tensor, l1: float, l2: float, reduction: str = "mean"):
    """(l1 * ||h_i||_1, l2 * ||h_i||_2^2), summed or averaged over the batch."""
    h = h.float().flatten(1)
    a, b = l1 * h.abs().sum(1), l2 * h.pow(2).sum(1)
    return (a.sum(), b.sum()) if reduction == "sum" else (a.mean(), b.mean())


def head_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: Optional[str]) -> torch.Tensor:
    """The classification loss of the head's logits: BCE per label for multi-label, else cross-entropy."""
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def medtl_head(head, z: torch.Tensor, labels=None) -> MedtlClassifierOutput:
    """hf_medtl's head on pooled features ``z``: bottleneck (optional) -> dropout -> classifier, with the loss and
    the feature penalties. ``head``: the model, or the head-only module that trains on cached features."""
    h = head.bottleneck(z) if head.bottleneck is not None else z
    logits = head.classifier(head.dropout(h))
    loss = None
    if labels is not None:
        a, b = feature_penalty(h, head.config.l1_feature_reg, head.config.l2_feature_reg)
        loss = head_loss(logits, labels, head.config.problem_type) + a + b
    return MedtlClassifierOutput(loss=loss, logits=logits, features=h)


def l2_normalise(z: torch.Tensor) -> torch.Tensor:
    """Rows of unit length; the floor is far below F.normalize's 1e-12, which leaves tiny features unscaled."""
    z = z.float().flatten(1)
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-30)


def knn_head(z: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, config, labels=None):
    """The k nearest training features of each L2-normalised ``z`` (cosine distance 1 - cos, or euclidean, both
    on normalised features) vote, plainly or by 1/distance (an exact match alone decides, as in scikit-learn);
    logits = log of the vote shares clipped at 1e-8, so that a softmax gives the shares back."""
    z = l2_normalise(z)
    cos = z @ bank.float().T
    # (from the dot product, not cdist: the same on normalised vectors, and it exports to ONNX)
    d = (1 - cos).clamp_min(0) if config.knn_metric == "cosine" else (2 - 2 * cos).clamp_min(0).sqrt()
    dist, idx = d.topk(min(config.knn_k, bank.shape[0]), dim=1, largest=False)
    if config.knn_weights == "distance":
        exact = dist <= 0
        w = torch.where(exact.any(1, keepdim=True), exact.float(), 1 / dist.clamp_min(1e-30))
    else:
        w = torch.ones_like(dist)
    onehot = (bank_labels[idx].unsqueeze(-1) == torch.arange(config.num_labels, device=z.device)).float()
    votes = (onehot * w.unsqueeze(-1)).sum(1)
    logits = torch.log((votes / votes.sum(1, keepdim=True)).clamp_min(1e-8))
    loss = nn.functional.nll_loss(logits, labels) if labels is not None else None
    return MedtlClassifierOutput(loss=loss, logits=logits, features=z)


class MedtlForImageClassification(PreTrainedModel):
    config_class = MedtlClassifierConfig
    main_input_name = "pixel_values"
    base_model_prefix = "medtl"
    input_modalities = ("image",)

    def __init__(self, config: MedtlClassifierConfig):
        super().__init__(config)
        if getattr(config, "encoder", False):
            self.backbone, width = PooledEncoder(config), config.feature_dim
        else:
            self.backbone = AutoModelForImageClassification.from_config(config.backbone_config)
            width = strip_classifier(self.backbone)
        self.bottleneck = nn.Linear(width, config.bottleneck_dim, bias=False) if config.head == "bottleneck" else None
        self.dropout = nn.Dropout(config.head_dropout)
        if config.head == "knn":  # no trained head: the training features and their labels, saved with the weights
            self.classifier = None
            self.register_buffer("knn_bank", torch.zeros(config.knn_size, width))
            self.register_buffer("knn_labels", torch.zeros(config.knn_size, dtype=torch.long))
        else:
            self.classifier = nn.Linear(config.bottleneck_dim if self.bottleneck is not None else width,
                                        config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and (module is self.classifier or module is self.bottleneck):
            module.reset_parameters()

    def forward(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        z = self.backbone(pixel_values=pixel_values).logits
        if self.config.head == "knn":
            return knn_head(z, self.knn_bank, self.knn_labels, self.config, labels)
        return medtl_head(self, z, labels)
