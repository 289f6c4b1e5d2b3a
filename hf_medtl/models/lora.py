"""LoRA / DoRA through peft: low-rank adapters on the backbone's attention projections (ViT-like models) or
pointwise convolutions (CNNs), the head trained in full, and the adapters merged into the weights after training.

The adapters are injected into the loaded model in place (``peft.get_peft_model`` mutates the model it wraps), so
that the Trainer, the θ* snapshots and the checkpoints see one ordinary transformers model throughout; the
PeftModel is kept beside it only for what needs it at the end: writing the adapter alone, and merging. After
``merge`` the model is plain again (no peft module, attribute or config key), so what the run scores is what it
saves and what ``pipeline()``, ONNX export and the app serve without peft.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

from torch import nn

from hf_medtl.models.heads import ModelError, classifier_head

logger = logging.getLogger("hf_medtl")

STRATEGIES = ("lora", "dora")
# Query and value projections by their names across families (HF ViT before transformers 5 and BEiT/Swin: query,
# value; transformers 5's ViT/DINOv2, SigLIP and CLIP: q_proj, v_proj); timm's ViTs fuse them into one qkv Linear.
ATTENTION_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("qkv",))
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)  # the layers peft's LoRA and DoRA adapt
_PEFT = "_medtl_peft_model"  # where the PeftModel waits for merge(): in the model's __dict__, not a submodule


def applies(model_args) -> bool:
    return model_args.finetune_strategy in STRATEGIES


def _head_names(model) -> list[str]:
    """The names of the head's modules (hf_medtl's head: its bottleneck and classifier), for modules_to_save."""
    head = classifier_head(model)
    parts = list(head) if isinstance(head, nn.ModuleList) and not any(head is m for m in model.modules()) else [head]
    return [name for name, m in model.named_modules() if any(m is p for p in parts)]


def _matches(name: str, target: str) -> bool:
    """peft's rule for a target_modules list: the module's whole name, or its last dotted part(s)."""
    return name == target or name.endswith("." + target)


def _pointwise(module: nn.Module) -> bool:
    """A 1x1 convolution over all channels, or a Linear, which inside a CNN is one applied at every position
    (ConvNeXt's pwconv)."""
    if isinstance(module, nn.Conv2d):
        return tuple(module.kernel_size) == (1, 1) and module.groups == 1
    return isinstance(module, nn.Linear)


def _in_head(name: str, head: list[str]) -> bool:
    return any(_matches(name, h) or name.startswith(h + ".") for h in head)


def default_targets(model, head: list[str]) -> list[str]:
    """Per family: the attention query/value projections when the model has them, else its pointwise layers."""
    body = [(name, m) for name, m in model.named_modules() if name and not _in_head(name, head)]
    linear = {name.rsplit(".", 1)[-1] for name, m in body if isinstance(m, nn.Linear)}
    for names in ATTENTION_TARGETS:
        if set(names) <= linear:
            return list(names)
    pointwise = [name for name, m in body if _pointwise(m)]
    if not pointwise:
        raise ModelError(f"{type(model).__name__}: no attention query/value projection and no 1x1 convolution to put "
                         "LoRA adapters on; name the layers in lora_target_modules")
    return pointwise


def check_targets(model, targets: list[str], head: list[str]) -> None:
    """Every target names at least one layer of the backbone (not of the head, which trains in full)."""
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        found = [n for n in names if _matches(n, target)]
        if not found:
            examples = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                               if isinstance(m, (nn.Linear, nn.Conv2d)) and not _in_head(n, head)})
            raise ModelError(f"lora_target_modules: '{target}' matches no module of {type(model).__name__} "
                             f"(its Linear / Conv2d layers are named e.g. {', '.join(examples[:8])})")
        if any(_in_head(n, head) for n in found):
            raise ModelError(f"lora_target_modules: '{target}' names the classification head, which trains in full; "
                             "target backbone layers")
        found = set(found)
        other = sorted({type(m).__name__ for n, m in model.named_modules() if n in found and not isinstance(m, ADAPTABLE)})
        if other:
            raise ModelError(f"lora_target_modules: '{target}' names {', '.join(other)} layers, which LoRA cannot "
                             "adapt; target Linear, Conv or Embedding layers")


def inject(model, model_args) -> int:
    """Adapters on the targets, the head trained in full (peft's modules_to_save), everything else frozen; returns
    the number of trainable parameters (adapters + head)."""
    from peft import LoraConfig, get_peft_model

    head = _head_names(model)
    targets = model_args.lora_target_modules or default_targets(model, head)
    check_targets(model, targets, head)
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=list(targets), modules_to_save=head,
                        use_dora=model_args.finetune_strategy == "dora", bias="none")
    try:
        with warnings.catch_warnings():  # peft probes the deprecated is_gradient_checkpointing (a FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as e:  # e.g. a target whose layer type peft cannot adapt
        reason = str(e).splitlines()[0][:200]
        raise ModelError(f"lora_target_modules {_shown(targets)}: peft cannot adapt them ({reason})") from None
    model.__dict__[_PEFT] = peft_model  # bypasses nn.Module.__setattr__: not registered, not in the state dict
    _freeze_extra_copies(model, head)
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The saved model's size: no adapter (merged) and one head (peft trains a copy beside the original until then).
    total = sum(p.numel() for name, p in model.named_parameters()
                if "lora_" not in name and ".modules_to_save." not in name)
    logger.info(f"{model_args.finetune_strategy}: r {model_args.lora_r}, alpha {model_args.lora_alpha} on "
                f"{_count_adapted(model)} layers ({_shown(targets)}): {adapters:,} adapter and {n - adapters:,} head "
                f"parameters train, {n / total:.2%} of the {total:,} the saved (merged) model has")
    return n


def _freeze_extra_copies(model, head: list[str]) -> None:
    """peft matches modules_to_save by the end of a module's name ('head' also catches a 'dist_head' or 'conv_head'):
    such an extra copy stays frozen, so it keeps the pretrained weights and the backbone stays as the strategy says."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and name not in head:
            module.requires_grad_(False)


def _count_adapted(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def _shown(targets: list[str]) -> str:
    return ", ".join(targets[:4]) + (f", ... ({len(targets)} in all)" if len(targets) > 4 else "")


def merge(model, adapter_dir: Optional[Path] = None) -> None:
    """Fold the adapters into the weights in place (W + B @ A x alpha / r; DoRA's magnitude too) and put the trained
    head where the original was: the model becomes a plain transformers model. ``adapter_dir``: first write the
    adapter alone there (peft's adapter_config.json + adapter_model.safetensors, the head included)."""
    peft_model = model.__dict__.pop(_PEFT, None)
    if peft_model is None:
        raise ModelError(f"{type(model).__name__}: no LoRA adapters to merge (finetune_strategy lora / dora "
                         "injects them when the model is built)")
    if adapter_dir is not None:
        peft_model.save_pretrained(str(adapter_dir))
        (Path(adapter_dir) / "README.md").unlink(missing_ok=True)  # peft's placeholder card; the run's is output_dir's
        logger.info("adapter (adapter_config.json, adapter_model.safetensors) written to the run's adapter/ folder, "
                    "for peft's PeftModel.from_pretrained on the base model")
    merged = peft_model.merge_and_unload()
    if merged is not model:  # peft unwraps the very object it was given; anything else would save another model
        raise ModelError(f"{type(model).__name__}: peft's merge returned another model than the one trained")
    model.__dict__.pop("peft_config", None)  # (peft's note on the wrapped model; merge_and_unload drops it too)
