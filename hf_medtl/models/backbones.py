"""Backbones: a pretrained classifier (HF or timm through TimmWrapper, Hub id or local dir) loaded with a new
head for our classes, its serving image processor, and loading a saved model back."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from pathlib import Path

from hf_medtl.models.encoders import encoder_config, load_encoder
from hf_medtl.models.heads import ModelError, init_head, register_auto_classes, with_medtl_head
from hf_medtl.models.positions import fit_image_size, learned_positions
from hf_medtl.models.strategies import apply_strategy

logger = logging.getLogger("hf_medtl")


@contextlib.contextmanager
def _loading(name: str):
    """Around every from_pretrained of a backbone: transformers' load report (it lists the head we replace on
    purpose as MISMATCH) and huggingface_hub's "Retrying in 8s" lines (20 for an unreachable Hub) stay off the
    console; and a Hub id in the HF cache loads in offline mode when the Hub cannot be reached. (Only offline
    mode avoids the network: with local_files_only transformers still asks the Hub for optional files, retrying
    each for ~25 s. HF_HUB_OFFLINE is read once at import, so the switch is huggingface_hub's own flag.)"""
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    fallback = _is_hub_id(name) and not _offline() and _cached(name) and _from_cache_only(name)
    before, hub_before = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    offline_before = constants.HF_HUB_OFFLINE
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    constants.HF_HUB_OFFLINE = offline_before or fallback
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        hub_logging.set_verbosity(hub_before)
        constants.HF_HUB_OFFLINE = offline_before


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _not_found(name: str, reason: str, unreachable: bool = False) -> ModelError:
    if (Path(name) / "pytorch_model.bin").is_file() and not list(Path(name).glob("*.safetensors")):
        return ModelError(f"'{name}': only pickle weights (pytorch_model.bin), which can run code when loaded; "
                          "set allow_pickle_weights true (--allow_pickle_weights for commands) if you trust it")
    if Path(name).exists() or name.startswith((".", "/", "~")):
        return ModelError(f"model_name_or_path '{name}': not a checkpoint directory ({reason}); it needs a config.json "
                          "and weights, as written by save_pretrained or `hf-medtl convert`")
    where = ("HF_HUB_OFFLINE=1 is set" if _offline() else f"the Hugging Face Hub cannot be reached ({reason})"
             if unreachable else "the Hugging Face Hub could not be reached")
    return ModelError(f"model_name_or_path '{name}': not found locally and {where}. Download it where the Hub is "
                      f"reachable (`hf download {name} --local-dir DIR`) and set model_name_or_path to DIR (or keep it "
                      "in the HF cache and set HF_HUB_OFFLINE=1), or make an offline backbone with "
                      "`hf-medtl convert efficientnet_lite0 DIR`")


def _is_hub_id(name: str | None) -> bool:
    """A name that can only mean a Hub repository: no such local path, and the shape of a repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


@functools.lru_cache(maxsize=None)
def _hub_answer(name: str) -> tuple[str, str]:
    """('ok' | 'gated' | 'missing' | 'unreachable', why) of one request for the model's config.json, without
    retries and within HF_HUB_ETAG_TIMEOUT; asked once per process (the pre-flight and the load share it)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        return "gated", ""
    except RepositoryNotFoundError:
        return "missing", ""
    except HfHubHTTPError as e:  # the Hub answered (no config.json, an error status): the load's errors say more
        return "ok", str(e).splitlines()[0]
    except Exception as e:  # the HTTP client's connection and timeout errors (their types differ between versions)
        return "unreachable", f"{constants.ENDPOINT}: {str(e).splitlines()[0][:120] or type(e).__name__}"
    return "ok", ""


@functools.lru_cache(maxsize=None)  # said once, not at each of the load's from_pretrained calls
def _from_cache_only(name: str) -> bool:
    answer, why = _hub_answer(name)
    if answer == "unreachable":
        logger.info(f"{name}: the Hugging Face Hub cannot be reached ({why}); loading the copy in the HF cache")
    return answer == "unreachable"


def check_available(model_args) -> None:
    """Fail in one line, within HF_HUB_ETAG_TIMEOUT seconds, when the backbone is a Hub id that is not in the HF
    cache and cannot be had from the Hub (unreachable, no such repo, gated). prepare() calls it before the data
    check, which would otherwise run first, only for the load to spend ~2 minutes on retries. A cached model
    passes without the network (_loading); with HF_HUB_OFFLINE=1 an uncached one fails at once; local folders are
    left to load_backbone, whose errors name them without any wait."""
    name = model_args.model_name_or_path
    if not _is_hub_id(name) or _cached(name):
        return
    if _offline():  # nothing to ask: a Hub id that is not in the cache cannot load
        raise ModelError(f"model_name_or_path '{name}': not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                         "downloading it; unset HF_HUB_OFFLINE, or pass a local checkpoint folder")
    answer, why = _hub_answer(name)
    if answer == "unreachable":
        raise _not_found(name, why, unreachable=True)
    if answer == "gated":
        raise ModelError(f"model_name_or_path '{name}': a gated model; accept its terms on huggingface.co/{name} "
                         "and log in (`hf auth login`)")
    if answer == "missing":
        raise ModelError(f"model_name_or_path '{name}': no such model on the Hub (or a private one: log in with "
                         "`hf auth login`), and no local folder of that name")


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
        with _loading(name), _member_of(name) as name:
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
        raise _not_found(name, str(e).splitlines()[0]) from None
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
        raise _not_found(str(model_dir), "no safetensors weights")
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
