"""An ensemble of image classifiers served as ONE transformers model: its forward averages the members'
probabilities (softmax, or sigmoid per finding for multi-label) and returns logits that give that average back
(log of the mean for single-label, so softmax(logits) = mean; logit of the mean for multi-label, so
sigmoid(logits) = mean). Whatever applies softmax / sigmoid to a model's logits (pipeline(), the ONNX export, the
toolkit's own scoring) therefore serves exactly the averaged probabilities the run scored.

Test-time augmentation served by the model itself: ``views`` (e.g. ["identity", "hflip"]) are operations on the
normalised pixel tensor, and the forward averages over members x views. A single run with `tta: hflip` is saved as
this class with one member, so that pipeline() and the ONNX export serve the flip-averaged probabilities its
metrics were computed with, not the image alone.

Members are the saved models of a `cv --ensemble` or an `ensemble_seeds` run: any image-classification config
(a transformers or TimmWrapper classifier, or hf_medtl's own MedtlForImageClassification), kept as config dicts in
``members`` and as weights under ``members.<i>.``. Self-contained like modeling_medtl.py (which it imports
relatively, so that ``save_pretrained`` copies both files and ``trust_remote_code`` loads it without hf_medtl).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from transformers import AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.modeling_outputs import ImageClassifierOutput

from .modeling_medtl import MODEL_TYPE, MedtlClassifierConfig, MedtlForImageClassification

ENSEMBLE_TYPE = "hf_medtl_ensemble"
# The views a model can serve inside its forward: exact on any input, no fill value needed, exportable to ONNX.
VIEWS = ("identity", "hflip")


class MedtlEnsembleConfig(PretrainedConfig):
    model_type = ENSEMBLE_TYPE

    def __init__(self, members: Optional[list] = None, member_names: Optional[list] = None,
                 views: Optional[list] = None, **kwargs):
        # Plain dicts (each with its model_type): config.json stays readable and loads without any registry.
        self.members = [m.to_dict() if isinstance(m, PretrainedConfig) else dict(m) for m in members or []]
        self.member_names = [str(n) for n in member_names or []]
        self.views = [str(v) for v in views or ["identity"]]
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ValueError(f"views {unknown} unknown; a model serves {', '.join(VIEWS)}")
        super().__init__(**kwargs)


def member_config(d: dict) -> PretrainedConfig:
    """A member's config from its dict, through its class's from_dict (which maps saved forms back, e.g.
    TimmWrapper's label_names to its labels); hf_medtl's own classifier without needing AutoConfig's registry."""
    kind = d["model_type"]
    return (MedtlClassifierConfig if kind == MODEL_TYPE else CONFIG_MAPPING[kind]).from_dict(dict(d))


def build_member(config: PretrainedConfig) -> nn.Module:
    if config.model_type == MODEL_TYPE:
        return MedtlForImageClassification(config)
    return AutoModelForImageClassification.from_config(config)


def view(pixel_values: torch.Tensor, name: str) -> torch.Tensor:
    return torch.flip(pixel_values, dims=[-1]) if name == "hflip" else pixel_values


def average_logits(member_logits: list[torch.Tensor], multi_label: bool) -> torch.Tensor:
    """Logits whose softmax (sigmoid) is the mean of the members' softmax (sigmoid) probabilities, computed in
    log space (logsumexp) so that confident members do not round to log(0)."""
    stacked = torch.stack([m.float() for m in member_logits])
    log_n = math.log(len(member_logits))
    if not multi_label:
        return torch.logsumexp(torch.log_softmax(stacked, -1), 0) - log_n
    log_p = torch.logsumexp(nn.functional.logsigmoid(stacked), 0) - log_n
    log_q = torch.logsumexp(nn.functional.logsigmoid(-stacked), 0) - log_n
    return log_p - log_q


class MedtlEnsembleForImageClassification(PreTrainedModel):
    config_class = MedtlEnsembleConfig
    main_input_name = "pixel_values"
    base_model_prefix = "ensemble"
    input_modalities = ("image",)

    def __init__(self, config: MedtlEnsembleConfig):
        super().__init__(config)
        self.members = nn.ModuleList([build_member(member_config(d)) for d in config.members])
        self.serve_views = True  # False: the members on the image alone (Grad-CAM runs the views itself)
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight is a member's, loaded from the checkpoint

    @property
    def multi_label(self) -> bool:
        return self.config.problem_type == "multi_label_classification"

    def forward(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        views = self.config.views if self.serve_views else ["identity"]
        logits = average_logits([m(pixel_values=view(pixel_values, v)).logits for m in self.members for v in views],
                                self.multi_label)
        loss = None
        if labels is not None:
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, labels.float()) if self.multi_label
                    else nn.functional.nll_loss(torch.log_softmax(logits, -1), labels))
        return ImageClassifierOutput(loss=loss, logits=logits)
