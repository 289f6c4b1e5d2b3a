"""A toolkit recipe against the transformers example's recipe (benchmarks/example_recipe.py), side by side, at
equal compute, on the data we have: repeated grouped K-fold cross-validation with a paired test.

    python benchmarks/recipes_vs_example.py RECIPE [--seeds 1,2,3] [--folds 5] [--fold_subset 0,1,...]
        [--per_class N] [--results benchmarks/results/NAME] [--work outputs/rve/NAME] [--key value ...]

Protocol, per seed S and fold k:
- The pool is every readable image of the recipe's data (an .npz's train + val, or a class-folder tree;
  ``--per_class N``: a seeded stratified subset), grouped by the toolkit's leakage guard (exact and near
  copies: a group never straddles two parts). StratifiedGroupKFold (hf_medtl.data.folds.fold_of, seed S) holds
  fold k out: the test images of both sides.
- The other folds are split 85/15 (grouped, stratified, seed S) into train and validation: both sides train on
  exactly these training images and validate on exactly these validation images.
- The toolkit runs the recipe (``finetune`` through ``hf_medtl.studies.runs.run_variant``; the fold is handed to
  it as an .npz with train / val / test arrays; ``cross_split_duplicates keep``: nothing is removed). The
  example runs with the recipe's backbone, image size, batch size, learning rate and epoch budget, so both
  process the same number of training images (the toolkit's early stop can only lower its own count).
- Both score the held-out fold. Each (seed, fold) row is appended to ``results.jsonl`` as it finishes; a rerun
  skips the rows already there.
Summary (``summary.json``, ``summary.md``): mean ± sd of test accuracy (and F1 macro) over the fold x seed runs,
the paired t-test and Wilcoxon signed-rank test on the per-run accuracy differences, and McNemar's exact test on
the pooled held-out predictions of each seed (each pool image predicted once per seed).
``--fold_subset 0`` keeps one held-out fold per seed: repeated grouped 80/20 splits, for the larger datasets.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from example_recipe import train_and_predict  # noqa: E402


def pool_of(recipe, per_class: int | None, seed: int):
    """(arrays or paths, labels (class ids), leakage groups, classes) of every readable image of the recipe's
    data; ``per_class``: a seeded random subset of that many images per class."""
    import dataclasses

    from hf_medtl.data import load_splits
    from hf_medtl.data.decode import decode

    a = dataclasses.replace(recipe.data, cv_folds=None, imbalance_ratio=None, cross_split_duplicates="keep")
    splits = load_splits(a, seed, None, write=False)
    keep = [i for i, s in enumerate(splits.assignment) if not splits.notes[i].startswith("unreadable")]
    classes = splits.classes
    labels = np.array([classes.index(splits.samples[i].label) for i in keep])
    if per_class:
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(len(classes)):
            idx = np.flatnonzero(labels == c)
            chosen += sorted(rng.choice(idx, min(per_class, len(idx)), replace=False).tolist())
        keep, labels = [keep[j] for j in chosen], labels[chosen]
    images = [splits.samples[i].array if splits.samples[i].array is not None
              else np.asarray(decode(splits.samples[i].path)) for i in keep]
    groups = [splits.groups[i] for i in keep]
    official_val = np.array(["::val_images/" in str(splits.samples[i].path) for i in keep])
    return images, labels, groups, classes, official_val


def fold_parts(labels, groups, k_folds: int, fold: int, seed: int, test_mask=None) -> dict[str, np.ndarray]:
    """train / val / test indices: fold ``fold`` of a grouped stratified K-fold held out as test (or, with
    ``test_mask``, exactly those images: e.g. an .npz's official validation split), the rest split 85/15."""
    from hf_medtl.data.folds import fold_of
    from hf_medtl.data.split import grouped_stratified_assign

    names = [str(x) for x in labels]
    if test_mask is not None:
        test, rest = np.flatnonzero(test_mask), np.flatnonzero(~test_mask)
    else:
        f = np.array(fold_of(names, groups, k_folds, seed))
        test, rest = np.flatnonzero(f == fold), np.flatnonzero(f != fold)
    inner = grouped_stratified_assign([names[i] for i in rest], [groups[i] for i in rest], {"validation": 0.15}, seed)
    inner = np.array(inner)
    return {"train": rest[inner == "train"], "val": rest[inner == "validation"], "test": test}


def write_npz(path: Path, images, labels, parts: dict) -> None:
    arrays = {}
    for key, idx in parts.items():
        arrays[f"{key}_images"] = np.stack([images[i] for i in idx])
        arrays[f"{key}_labels"] = labels[idx].reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def read_probs(csv_path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from hf_medtl.evaluation import report

    _, labels, probs, _ = report.read_predictions(csv_path)
    return probs, labels


def f1_macro(pred, labels, k) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, pred, labels=list(range(k)), average="macro", zero_division=0))


def run_one(a, recipe, overrides, images, labels, groups, classes, official_val, seed, fold) -> dict:
    from hf_medtl.studies.runs import run_variant

    parts = fold_parts(labels, groups, a.folds, fold, seed, official_val if a.official_val_as_test else None)
    where = Path(a.work) / f"seed-{seed}" / f"fold-{fold}"
    npz = where / "data.npz"
    write_npz(npz, images, labels, parts)
    t = recipe.training
    extra = ["--npz_file", str(npz), "--data_dir", "null", "--csv_file", "null", "--class_names", json.dumps(classes),
             "--seed", str(seed), "--split_seed", str(seed), "--cross_split_duplicates", "keep",
             "--near_duplicate_distance", "null", "--cv_folds", "null"]
    start = time.perf_counter()
    m = run_variant(a.recipe, overrides, extra, where / "recipe")
    recipe_wall = time.perf_counter() - start
    probs_r, labels_r = read_probs(where / "recipe" / "predictions_test.csv", classes)
    k = len(classes)
    n_train = len(parts["train"])
    row = {"seed": seed, "fold": fold, "n_train": n_train, "n_val": len(parts["val"]), "n_test": len(parts["test"]),
           "recipe_accuracy": float((probs_r.argmax(1) == labels_r).mean()),
           "recipe_f1_macro": f1_macro(probs_r.argmax(1), labels_r, k),
           "recipe_epochs_run": m["epochs_run"], "recipe_best_epoch": m["best_epoch"],
           "recipe_images_processed": int(m.get("images_processed") or round(m["epochs_run"] * n_train)),
           "recipe_train_s": m["train_runtime_s"], "recipe_wall_s": recipe_wall,
           "recipe_correct": (probs_r.argmax(1) == labels_r).astype(int).tolist()}
    if a.recipe_only:  # choosing a recipe: the toolkit's side alone
        npz.unlink()
        return row
    items = {key: [(images[i], int(labels[i])) for i in idx] for key, idx in parts.items()}
    start = time.perf_counter()
    ex = train_and_predict(items["train"], items["val"], items["test"], classes, recipe.model.model_name_or_path,
                           recipe.data.image_size, t.num_train_epochs, t.learning_rate, t.per_device_train_batch_size,
                           seed, where / "example")
    example_wall = time.perf_counter() - start
    assert np.array_equal(ex["labels"], labels_r), "the two sides scored different images"
    np.savez(where / "example_test_probs.npz", probs=ex["probs"], labels=ex["labels"])
    row.update({"example_accuracy": float((ex["probs"].argmax(1) == ex["labels"]).mean()),
           "example_f1_macro": f1_macro(ex["probs"].argmax(1), ex["labels"], k),
           "example_images_processed": ex["images_processed"], "example_best_epoch": ex["best_epoch"],
           "example_train_s": ex["train_runtime_s"], "example_wall_s": example_wall,
           "example_correct": (ex["probs"].argmax(1) == ex["labels"]).astype(int).tolist()})
    npz.unlink()  # the images are the shared data's; only results stay
    return row


def summarise(rows: list[dict], meta: dict) -> dict:
    from scipy import stats as st

    from hf_medtl.evaluation.stats import mcnemar_exact

    r = np.array([x["recipe_accuracy"] for x in rows])
    e = np.array([x["example_accuracy"] for x in rows])
    d = r - e
    out = {**meta, "runs": len(rows),
           "recipe_accuracy": {"mean": float(r.mean()), "sd": float(r.std(ddof=1)) if len(r) > 1 else 0.0},
           "example_accuracy": {"mean": float(e.mean()), "sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0},
           "recipe_f1_macro": float(np.mean([x["recipe_f1_macro"] for x in rows])),
           "example_f1_macro": float(np.mean([x["example_f1_macro"] for x in rows])),
           "difference": {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                          "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum())},
           "recipe_images_processed": int(sum(x["recipe_images_processed"] for x in rows)),
           "example_images_processed": int(sum(x["example_images_processed"] for x in rows)),
           "recipe_train_s": float(sum(x["recipe_train_s"] for x in rows)),
           "example_train_s": float(sum(x["example_train_s"] for x in rows))}
    if len(rows) > 1 and np.any(d != 0):
        out["paired_t"] = {"t": float(st.ttest_rel(r, e).statistic), "p_value": float(st.ttest_rel(r, e).pvalue)}
        out["wilcoxon"] = {"p_value": float(st.wilcoxon(r, e).pvalue)}
    out["mcnemar"] = {}
    for seed in sorted({x["seed"] for x in rows}):
        a = np.concatenate([x["recipe_correct"] for x in rows if x["seed"] == seed])
        b = np.concatenate([x["example_correct"] for x in rows if x["seed"] == seed])
        out["mcnemar"][str(seed)] = {"n": int(len(a)), "recipe": float(a.mean()), "example": float(b.mean()),
                                     **mcnemar_exact(a, b)}
    return out


def markdown(s: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [f"# {s['recipe']} vs the transformers example recipe", "",
             f"{s['protocol']}", "",
             "| | toolkit recipe | example recipe |", "|---|---|---|",
             f"| test accuracy, mean ± sd over {s['runs']} runs (%) | {pct(s['recipe_accuracy']['mean'])} ± "
             f"{pct(s['recipe_accuracy']['sd'])} | {pct(s['example_accuracy']['mean'])} ± {pct(s['example_accuracy']['sd'])} |",
             f"| F1 macro, mean (%) | {pct(s['recipe_f1_macro'])} | {pct(s['example_f1_macro'])} |",
             f"| training images processed | {s['recipe_images_processed']:,} | {s['example_images_processed']:,} |",
             f"| training seconds (2 CPU cores) | {s['recipe_train_s']:.0f} | {s['example_train_s']:.0f} |", "",
             f"Difference (recipe − example): {pct(s['difference']['mean'])} ± {pct(s['difference']['sd'])} points; "
             f"{s['difference']['wins']} wins, {s['difference']['ties']} ties, {s['difference']['losses']} losses."]
    if "paired_t" in s:
        lines.append(f"Paired t-test p = {s['paired_t']['p_value']:.3g}; Wilcoxon signed-rank p = {s['wilcoxon']['p_value']:.3g}.")
    for seed, m in s["mcnemar"].items():
        lines.append(f"McNemar (seed {seed}, {m['n']} held-out images): recipe {pct(m['recipe'])}%, example "
                     f"{pct(m['example'])}%, only-recipe-correct {m['only_a_correct']}, only-example-correct "
                     f"{m['only_b_correct']}, p = {m['p_value']:.3g}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold_subset", default=None, help="comma-separated folds to run (default: all)")
    p.add_argument("--per_class", type=int, default=None)
    p.add_argument("--recipe_only", action="store_true", help="run the toolkit's recipe alone (to choose recipes)")
    p.add_argument("--official_val_as_test", action="store_true",
                   help="an .npz's official validation split is the test set of every seed (one 'fold', 0)")
    p.add_argument("--results", default=None, help="default benchmarks/results/<recipe name>")
    p.add_argument("--work", default=None, help="default outputs/recipes_vs_example/<recipe name>")
    a, overrides = p.parse_known_args(argv)
    from hf_medtl.console import setup_logging
    from hf_medtl.config.recipe import load_recipe

    setup_logging()
    name = Path(a.recipe).stem
    a.results = Path(a.results or f"benchmarks/results/{name}")
    a.work = Path(a.work or f"outputs/recipes_vs_example/{name}")
    a.results.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(a.recipe, overrides)
    seeds = [int(x) for x in a.seeds.split(",")]
    folds = ([0] if a.official_val_as_test else
             [int(x) for x in a.fold_subset.split(",")] if a.fold_subset else list(range(a.folds)))
    log = a.results / "results.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    done = {(r["seed"], r["fold"]) for r in rows}
    pool = None
    for seed in seeds:
        for fold in folds:
            if (seed, fold) in done:
                continue
            if pool is None:
                pool = pool_of(recipe, a.per_class, seeds[0])
            row = run_one(a, recipe, overrides, *pool, seed, fold)
            rows.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} fold {fold}: recipe {row['recipe_accuracy']:.4f}, example "
                  f"{row.get('example_accuracy', float('nan')):.4f}", flush=True)
    rows = [r for r in rows if r["seed"] in seeds and r["fold"] in folds]
    if a.recipe_only:
        acc = np.array([r["recipe_accuracy"] for r in rows])
        s = {"recipe": a.recipe, "overrides": overrides, "runs": len(rows), "accuracy_mean": float(acc.mean()),
             "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
             "f1_macro_mean": float(np.mean([r["recipe_f1_macro"] for r in rows])),
             "accuracies": acc.tolist(), "train_s": float(sum(r["recipe_train_s"] for r in rows))}
        (a.results / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
        print(json.dumps(s))
        return 0
    t = recipe.training
    protocol = ((f"{len(seeds)} seed(s) ({a.seeds}); the official validation split as the test set" if a.official_val_as_test
                 else f"{len(seeds)} seed(s) ({a.seeds}) x {a.folds}-fold grouped stratified cv")
                + f"{' (held-out folds ' + a.fold_subset + ' only: repeated grouped splits)' if a.fold_subset else ''}"
                f"{f', {a.per_class} images per class' if a.per_class else ''}; {recipe.model.model_name_or_path}, "
                f"{recipe.data.image_size} px, batch {t.per_device_train_batch_size}, lr {t.learning_rate:g}, "
                f"{t.num_train_epochs:g} epochs for both; train/validation 85/15 of the other folds, the same for both.")
    s = summarise(rows, {"recipe": a.recipe, "overrides": overrides, "protocol": protocol})
    (a.results / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    (a.results / "summary.md").write_text(markdown(s))
    print(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
