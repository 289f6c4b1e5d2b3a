"""The model stage: a pretrained backbone (HF or timm through TimmWrapper, Hub id or local dir) with a new head."""
from __future__ import annotations

import os
from pathlib import Path

from hf_medtl.errors import HfMedtlError


class ModelError(HfMedtlError):
    pass


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _not_found(name: str, reason: str) -> ModelError:
    if (Path(name) / "pytorch_model.bin").is_file() and not list(Path(name).glob("*.safetensors")):
        return ModelError(f"model_name_or_path '{name}': only pickle weights (pytorch_model.bin), which can run code "
                          "when loaded; set allow_pickle_weights true if you trust this checkpoint")
    if Path(name).exists() or name.startswith((".", "/", "~")):
        return ModelError(f"model_name_or_path '{name}': not a checkpoint directory ({reason}); it needs a config.json "
                          "and weights, as written by save_pretrained or `hf-medtl convert`")
    where = "HF_HUB_OFFLINE=1 is set" if _offline() else "the Hugging Face Hub could not be reached"
    return ModelError(f"model_name_or_path '{name}': not found locally and {where}. Download it where the Hub is "
                      f"reachable (`hf download {name} --local-dir DIR`) and set model_name_or_path to DIR, or make "
                      "an offline backbone with `hf-medtl convert efficientnet_lite0 DIR`")


def load_backbone(model_args, classes: list[str]):
    """(model, image processor) for ``classes``: pretrained weights, the classification head re-initialised."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    name, trust = model_args.model_name_or_path, model_args.trust_remote_code
    id2label = dict(enumerate(classes))
    labels = dict(num_labels=len(classes), id2label=id2label, label2id={c: i for i, c in id2label.items()})
    try:
        processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust)
        if model_args.pretrained:
            model = AutoModelForImageClassification.from_pretrained(
                name, ignore_mismatched_sizes=True, trust_remote_code=trust,
                use_safetensors=None if model_args.allow_pickle_weights else True, **labels)
        else:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust, **labels)
            model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust)
    except OSError as e:
        raise _not_found(name, str(e).splitlines()[0]) from None
    if hasattr(model.config, "label_names"):  # TimmWrapper saves these over id2label; the base's are stale
        model.config.label_names = list(classes)
    if model_args.finetune_strategy == "linear_probe":
        freeze_backbone(model)
    return model, processor


def classifier_head(model):
    """The module that maps pooled features to class logits."""
    if hasattr(model, "timm_model"):
        return model.timm_model.get_classifier()
    head = getattr(model, "classifier", None) or getattr(model, "head", None)
    if head is None:
        raise ModelError(f"{type(model).__name__}: no 'classifier' or 'head' module; use finetune_strategy 'full'")
    return head


def freeze_backbone(model) -> None:
    """Train only the head: every other parameter stops receiving gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in classifier_head(model).parameters():
        p.requires_grad_(True)


def match_processor_to_training(model, processor, prep) -> None:
    """Make the saved image processor resize and normalise as training's eval transform did, so that
    ``pipeline("image-classification")`` sees what the model saw (image_size may differ from the backbone's)."""
    (h, w), mean, std = prep.size, list(prep.mean), list(prep.std)
    if hasattr(model.config, "pretrained_cfg"):  # TimmWrapper: the processor is rebuilt from config.json
        model.config.pretrained_cfg.update(input_size=[3, h, w], crop_pct=1.0, crop_mode="squash", mean=mean, std=std)
        return
    processor.image_mean, processor.image_std = mean, std
    if "height" in processor.size:
        processor.size = {"height": h, "width": w}
    else:
        processor.size = {"shortest_edge": h}
        if hasattr(processor, "crop_pct"):
            processor.crop_pct = 1.0
    if getattr(processor, "do_center_crop", False):
        processor.crop_size = {"height": h, "width": w}
