"""Shared by the benchmark scripts: run one recipe in several variants in this process, timing each."""
import time

from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe


def run_variants(recipe_path: str, overrides: list[str], variants: dict[str, list[str]]) -> tuple[str, dict]:
    """(base output_dir, {variant: (metrics, wall seconds)}); variant v writes to <output_dir>_<v>."""
    base = load_recipe(recipe_path, overrides).training.output_dir
    results = {}
    for name, extra in variants.items():
        recipe = load_recipe(recipe_path, [*overrides, *extra, "--output_dir", f"{base}_{name}"])
        start = time.perf_counter()
        metrics = run(recipe)
        results[name] = (metrics, round(time.perf_counter() - start, 1))
        print(name, {k: metrics[k] for k in ("epochs_run", "lr_reductions", "best_epoch")},
              "test accuracy", metrics["test"]["accuracy"], "wall", results[name][1], flush=True)
    return base, results


def model_and_data_arguments(parser, images):
    """The positional checkpoint and image folder every data benchmark takes, and how many images to use."""
    parser.add_argument("checkpoint", nargs="?", default="checkpoints/efficientnet_lite0")
    parser.add_argument("data_dir", nargs="?", default="../shared/datasets/brain_tumor_mri/Training")
    parser.add_argument("--images", type=int, **({"nargs": "+", "default": images} if isinstance(images, list)
                                                  else {"default": images}))
    return parser
