"""Backbones: a pretrained classifier (HF or timm through TimmWrapper, Hub id or local dir) loaded with a new
head for our classes, its serving image processor, and loading a saved model back."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from hf_medtl.models.encoders import encoder_config, load_encoder
from hf_medtl.models.heads import ModelError, init_head, register_auto_classes, with_medtl_head
from hf_medtl.models.hub_source import check_available, loading, not_found
from hf_medtl.models.positions import fit_image_size, learned_positions
from hf_medtl.models.strategies import apply_strategy

logger = logging.getLogger("hf_medtl")


@contextlib.contextmanager
def _member_of(name: str):
    """A saved run whose model serves its TTA views inside its forward (a one-member MedtlEnsemble, what finetune
    saves with `tta: hflip`) is fine-tuned from as its member: unpacked into a temporary folder for the load. An
    ensemble of several models: one line naming which to start from instead."""
    import json
    import tempfile

    config = Path(name) / "config.json"
    kind = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    if kind != "hf_medtl_ensemble":
        yield name
        return
    model, processor, _ = load_saved_model(name)
    if len(model.members) != 1:
        raise ModelError(f"model_name_or_path '{name}': an ensemble of {len(model.members)} models; fine-tune from "
                         "one of them (its members/ folder) instead")
    with tempfile.TemporaryDirectory(prefix="hf_medtl_member_") as tmp:
        model.members[0].save_pretrained(tmp)
        processor.save_pretrained(tmp)
        yield tmp


def is_multi_label(model_or_config) -> bool:
    """Whether a model (or its config) classifies several labels at once: a sigmoid per label, not a softmax."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "problem_type", None) == "multi_label_classification"


def load_backbone(model_args, classes: list[str], image_size: int | None = None, multi_label: bool = False):
    """(model, serving image processor) for ``classes``: pretrained weights, the classification head
    re-initialised (hf_medtl's bottleneck / dropout head when the recipe asks for one, initialised by
    ``head_init``), the parameters the strategy trains in epoch 1, and the processor the run evaluates with and
    saves (see serving_processor). ``multi_label``: one sigmoid output per class (problem_type in config.json)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    name, trust = model_args.model_name_or_path, model_args.trust_remote_code
    id2label = dict(enumerate(classes))
    labels = dict(num_labels=len(classes), id2label=id2label, label2id={c: i for i, c in id2label.items()},
                  problem_type="multi_label_classification" if multi_label else "single_label_classification")
    check_available(model_args)
    try:
        with loading(name), _member_of(name) as name:
            processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust)
            if not hasattr(processor, "image_mean") and not hasattr(processor, "data_config"):
                raise ModelError(f"model_name_or_path '{name}': its processor ({type(processor).__name__}) is not "
                                 "an image processor with a mean and std")
            encoder = encoder_config(name, model_args)  # None: the family's own image-classification class
            if encoder is not None:
                model = load_encoder(name, encoder, model_args, labels, image_size)
            elif model_args.pretrained:
                model = AutoModelForImageClassification.from_pretrained(
                    name, ignore_mismatched_sizes=True, trust_remote_code=trust,
                    use_safetensors=None if model_args.allow_pickle_weights else True, **labels)
                logger.info(f"loaded {name}; classification head re-initialised for {len(classes)} classes")
            else:
                config = AutoConfig.from_pretrained(name, trust_remote_code=trust, **labels)
                model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust)
    except OSError as e:
        raise not_found(name, str(e).splitlines()[0]) from None
    if hasattr(model.config, "label_names"):  # TimmWrapper saves these over id2label; the base's are stale
        model.config.label_names = list(classes)
    if encoder is None:  # (encoders resize their own positions: models/encoders.py)
        fit_image_size(model, image_size, model_args.model_name_or_path)  # a ViT at another size: positions resized
    processor = serving_processor(model, processor, image_size)
    if (model_args.head == "bottleneck" or model_args.head_dropout > 0) and encoder is None:
        register_auto_classes()
        model = with_medtl_head(model, model_args)
    init_head(model, model_args.head_init)
    n = apply_strategy(model, model_args)
    logger.info(f"finetune_strategy '{model_args.finetune_strategy}': {n:,} of "
                f"{sum(p.numel() for p in model.parameters()):,} parameters train from epoch 1")
    return model, processor


def serving_processor(model, processor, image_size: int | None = None):
    """The image processor that the run evaluates with and saves: it squashes the whole image to the input
    size (never crops: a lesion may sit at the border) with the backbone's own interpolation, mean and std.

    Evaluation inside the run, ``hf-medtl evaluate`` and ``pipeline()`` all call this processor, so the
    pixels a saved model serves are the pixels it was scored on. Per family:
    - timm (TimmWrapper): ``pretrained_cfg`` (saved in config.json, which is where TimmWrapperImageProcessor
      reads it) gets crop_mode 'squash', crop_pct 1 and the input size; its interpolation is kept.
    - HF processors (ViT, ResNet/ConvNeXt's ConvNextImageProcessor, DeiT, BEiT, ...): a ViTImageProcessor
      with size {height, width}, which resizes without keeping the aspect ratio and does not crop, carrying
      over the backbone's resample, rescale factor, mean and std. (ConvNextImageProcessor cannot squash below
      384 px: it resizes the short side and centre-crops.)
    """
    from transformers import TimmWrapperImageProcessor, ViTImageProcessor

    if hasattr(model.config, "pretrained_cfg"):
        cfg = model.config.pretrained_cfg
        h, w = (image_size, image_size) if image_size else tuple(cfg.get("input_size", [3, 224, 224])[1:])
        cfg.update(input_size=[3, h, w], crop_pct=1.0, crop_mode="squash",
                   interpolation=cfg.get("interpolation") or "bicubic")
        cfg.pop("test_input_size", None)  # timm would prefer it over input_size at evaluation
        return TimmWrapperImageProcessor(pretrained_cfg=cfg, architecture=getattr(model.config, "architecture", None))
    size = dict(getattr(processor, "crop_size", None) or {}) if getattr(processor, "do_center_crop", False) else {}
    size = size or dict(processor.size)
    if image_size:
        h = w = image_size
    elif "height" in size:
        h, w = size["height"], size["width"]
    else:
        h = w = size.get("shortest_edge") or size["longest_edge"]
    return ViTImageProcessor(do_resize=True, size={"height": h, "width": w}, resample=int(processor.resample),
                             do_rescale=getattr(processor, "do_rescale", True),
                             rescale_factor=getattr(processor, "rescale_factor", 1 / 255),
                             do_normalize=getattr(processor, "do_normalize", True),
                             image_mean=list(processor.image_mean), image_std=list(processor.image_std))


def load_saved_model(model_dir: str | Path, allow_pickle_weights: bool = False, trust_remote_code: bool = False):
    """(model in eval mode, image processor, class names) of a saved image classifier, under the toolkit's
    loading policy: safetensors only unless pickle weights are allowed, remote code off unless trusted."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    register_auto_classes()  # hf_medtl's own heads load without remote code
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a saved model (no config.json); pass the output_dir of a finetune run")
    if not list(model_dir.glob("*.safetensors")) and not allow_pickle_weights:
        raise not_found(str(model_dir), "no safetensors weights")
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    if "pretrained_cfg" not in config and not (model_dir / "preprocessor_config.json").is_file():
        raise ModelError(f"{model_dir}: preprocessor_config.json is missing (the image processor the model was "
                         "scored with); restore it from the run")
    try:
        model = AutoModelForImageClassification.from_pretrained(
            model_dir, trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle_weights else True)
        processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: weights whose shapes disagree with config.json
        raise ModelError(f"{model_dir}: cannot load the saved model ({str(e).splitlines()[0][:160]}); config.json "
                         "and the weights must come from the same save") from None
    _check_processor(model_dir, model, processor)
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    declared = _declared_labels(model_dir / "config.json")
    if declared is not None and declared != classes:
        raise ModelError(f"{model_dir}: config.json names {len(declared)} label(s) {declared[:4]}{'...' if len(declared) > 4 else ''} "
                         f"but the classifier has {len(classes)} output(s); restore the config.json saved with the weights")
    return model.eval(), processor, classes


def _check_processor(model_dir: Path, model, processor) -> None:
    """The saved image processor can serve the model: one line naming the key of preprocessor_config.json that an
    edit broke, instead of a traceback in the first batch (a mean per channel, a resize to one size, a size the
    model takes)."""
    where = f"{model_dir / 'preprocessor_config.json'}"
    if hasattr(processor, "data_config"):  # timm's: read from config.json's pretrained_cfg, written by hf_medtl
        return
    channels = getattr(model.config, "num_channels", 3)
    for key in ("image_mean", "image_std"):
        value = getattr(processor, key, None)
        if getattr(processor, "do_normalize", True) and (not isinstance(value, (list, tuple)) or len(value) != channels):
            raise ModelError(f"{where}: '{key}' must hold {channels} values (one per channel), got {value!r}; restore "
                             "the file saved with the model")
    if not getattr(processor, "do_resize", True):
        raise ModelError(f"{where}: 'do_resize' is false, so images of other sizes than the model's would reach it "
                         "unchanged; set it true (the run resized every image)")
    size = dict(getattr(processor, "size", None) or {})
    native = getattr(model.config, "image_size", None)
    if isinstance(native, int) and learned_positions(model) is not None and size.get("height", native) != native:
        raise ModelError(f"{where}: 'size' {size} but the model takes {native} × {native} px; restore the size "
                         "saved with the model")


def _declared_labels(config_json: Path) -> list[str] | None:
    """The class names config.json states (TimmWrapper's label_names, else id2label in id order); None when it
    states none (then transformers' LABEL_i names are all there is)."""
    import json

    config = json.loads(config_json.read_text())
    if config.get("label_names"):
        return [str(x) for x in config["label_names"]]
    id2label = config.get("id2label") or {}
    try:
        return [id2label[k] for k in sorted(id2label, key=int)] or None
    except (TypeError, ValueError):
        return None
