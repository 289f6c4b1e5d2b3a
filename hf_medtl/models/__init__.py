"""The model stage: backbones (loading HF / timm / local), where they come from (hub_source: the Hub asked once),
heads (linear, bottleneck, dropout, init) and
strategies (freeze / partial / gradual / parameter groups)."""
from hf_medtl.models.backbones import is_multi_label, load_backbone, load_saved_model, serving_processor
from hf_medtl.models.heads import ModelError, classifier_head, init_head, register_auto_classes, with_medtl_head
from hf_medtl.models.modeling_medtl import MedtlClassifierConfig, MedtlForImageClassification
from hf_medtl.models.strategies import (apply_strategy, backbone_stages, freeze_backbone, keep_frozen_in_eval_mode,
                                        param_groups, stages_training, trainable_parameters)

__all__ = ["MedtlClassifierConfig", "MedtlForImageClassification", "ModelError", "apply_strategy", "backbone_stages",
           "classifier_head", "freeze_backbone", "init_head", "is_multi_label", "keep_frozen_in_eval_mode", "load_backbone",
           "load_saved_model", "param_groups", "register_auto_classes", "serving_processor", "stages_training",
           "trainable_parameters", "with_medtl_head"]
