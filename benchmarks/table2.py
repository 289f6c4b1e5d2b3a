"""Table 2 of Khoa & Tri (seed 000): run the recipes whose data and weights are here, and tabulate them beside
the paper's published figures.

    python benchmarks/table2.py [--only brain_*,covid_ct_vit] [--also benchmarks/recipes/brain_lite0.json]
                                [--output_dir outputs/table2] [--key value ...]

Every `recipes/{brain,covid_ct,breakhis}_{resnet,densenet,convnext,vit,vit_lowlr}.json` (or the --only subset)
runs when its data source exists and its backbone is a local folder or is in the local Hub cache; the others
are skipped with one line each (their row keeps the paper's figures, ours empty). --also adds recipes outside the 15 (their paper columns stay empty). Any
--key value overrides every recipe that runs. A finished run in <output_dir>/<recipe> is read, not rerun.
Writes <output_dir>/table2.md and table2.json.
"""
from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = {"covid_ct": "SARS-COV-2", "breakhis": "BreaKHis", "brain": "Brain Tumor"}
MODELS = {"resnet": "ResNet", "densenet": "DenseNet", "convnext": "ConvNeXt", "vit": "ViT", "vit_lowlr": "ViT*"}
# Table 2 as published: train, val, test accuracy, precision, recall, F1 (%).
PAPER = {
    ("SARS-COV-2", "ResNet"): (100.0, 99.19, 96.79, 97, 97, 97), ("SARS-COV-2", "DenseNet"): (100.0, 98.39, 97.99, 98, 98, 98),
    ("SARS-COV-2", "ConvNeXt"): (99.65, 97.18, 97.19, 97, 97, 97), ("SARS-COV-2", "ViT"): (94.35, 86.69, 91.57, 93, 91, 91),
    ("SARS-COV-2", "ViT*"): (99.9, 93.55, 94.38, 94, 94, 94),
    ("BreaKHis", "ResNet"): (99.89, 90.87, 94.31, 93, 94, 94), ("BreaKHis", "DenseNet"): (100.0, 97.39, 94.50, 94, 93, 94),
    ("BreaKHis", "ConvNeXt"): (100.0, 95.65, 95.96, 95, 96, 95), ("BreaKHis", "ViT"): (93.46, 90.00, 84.59, 83, 81, 82),
    ("BreaKHis", "ViT*"): (99.89, 93.48, 92.29, 91, 91, 91),
    ("Brain Tumor", "ResNet"): (99.98, 97.32, 98.55, 98, 98, 98), ("Brain Tumor", "DenseNet"): (100.0, 99.42, 99.47, 99, 99, 99),
    ("Brain Tumor", "ConvNeXt"): (99.96, 99.53, 99.16, 99, 99, 99), ("Brain Tumor", "ViT"): (98.13, 92.53, 88.56, 89, 88, 88),
    ("Brain Tumor", "ViT*"): (100.0, 98.48, 98.4, 98, 98, 98),
}
PAPER_RECIPES = [f"{d}_{m}" for d in DATASETS for m in MODELS]


def label(name: str, model_path: str, recipe_model: str | None = None) -> tuple[str, str]:
    """(dataset, model) as Table 2 names them. The paper's model name only when the run uses the recipe's own
    backbone (``recipe_model``); an overridden backbone, or a recipe outside the 15, keeps its folder name."""
    for key, dataset in DATASETS.items():
        if name.startswith(key + "_"):
            own = recipe_model is None or model_path == recipe_model
            return dataset, MODELS[name[len(key) + 1:]] if own and name[len(key) + 1:] in MODELS else Path(model_path).name
    return name, Path(model_path).name


def missing(recipe) -> str | None:
    """Why the recipe cannot run here (one line), or None."""
    d = recipe.data
    for key in ("data_dir", "train_dir", "test_dir", "csv_file", "npz_file"):
        value = getattr(d, key)
        if value and not Path(value).exists():
            return f"no data at {key} '{value}' (see docs/running.md, The shipped recipes)"
    model = recipe.model.model_name_or_path
    if Path(model).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        return f"weights '{model}' are neither a local folder nor in the local Hub cache (hf download {model})"
    return None


def row(name: str, recipe, metrics: dict, recipe_model: str | None) -> dict:
    dataset, model = label(name, recipe.model.model_name_or_path, recipe_model)
    t = metrics["test"]
    ours = (metrics.get("train_accuracy"), metrics["validation"]["accuracy"], t["accuracy"], t["precision_macro"],
            t["recall_macro"], t["f1_macro"])
    return {"recipe": name, "dataset": dataset, "model": model, "ours": [None if v is None else 100 * v for v in ours],
            "test_ci": [100 * v for v in t.get("ci", {}).get("accuracy", [])], "paper": PAPER.get((dataset, model)),
            "epochs": metrics["epochs_run"], "images": metrics["split_counts"]}


def markdown(rows: list[dict]) -> str:
    head = ("Train Acc", "Val Acc", "Test Acc", "Precision", "Recall", "F1-score")
    lines = ["| Dataset | Model | " + " | ".join(f"{h} (paper / ours)" for h in head) + " | ours: test 95% CI | epochs |",
             "|---|---|" + "---|" * (len(head) + 2)]
    for r in rows:
        cells = [f"{'–' if p is None else f'{p:g}%'} / {'–' if o is None else f'{o:.2f}%'}"
                 for p, o in zip(r["paper"] or [None] * 6, r["ours"])]
        ci = "–".join(f"{v:.2f}%" for v in r["test_ci"])
        lines.append(f"| {r['dataset']} | {r['model']} | " + " | ".join(cells) + f" | {ci} | {r['epochs']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    from hf_medtl.console import run_command, setup_logging
    from hf_medtl.outputs import atomic_write_text
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.studies.runs import run_variant

    setup_logging()
    only, also, out, rest = "*", [], Path("outputs/table2"), []
    it = iter(argv)
    for arg in it:
        if arg in ("--only", "--also", "--output_dir"):
            value = next(it, None)
            if value is None:
                print(f"error: {arg} needs a value", file=sys.stderr)
                return 2
            only, also, out = ((value, also, out) if arg == "--only" else (only, also + [value], out) if arg == "--also"
                               else (only, also, Path(value)))
        else:
            rest.append(arg)
    chosen = [REPO / "recipes" / f"{n}.json" for n in PAPER_RECIPES
              if any(fnmatch.fnmatch(n, p.strip()) for p in only.split(","))] + [Path(a) for a in also]

    def go() -> int:
        rows = []
        for path in chosen:
            name = path.stem
            recipe = load_recipe(path, rest)
            recipe_model = json.loads(path.read_text()).get("model_name_or_path")
            why = missing(recipe)
            if why:
                print(f"skip {name}: {why}", flush=True)
                dataset, model = label(name, recipe.model.model_name_or_path, recipe_model)
                if (dataset, model) in PAPER:  # the paper's figures stay in the table, ours empty
                    rows.append({"recipe": name, "dataset": dataset, "model": model, "ours": [None] * 6,
                                 "test_ci": [], "paper": PAPER[(dataset, model)], "epochs": "–", "skipped": why})
                continue
            metrics = run_variant(path, rest, [], out / name)
            rows.append(row(name, recipe, metrics, recipe_model))
            print(f"ran {name}: test accuracy {metrics['test']['accuracy']:.4f}", flush=True)
        table = markdown(rows)
        atomic_write_text(out / "table2.json", json.dumps(rows, indent=2) + "\n")
        atomic_write_text(out / "table2.md", table)
        print(table, end="")
        return 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
