"""benchmarks/recipes_vs_example.py and example_recipe.py on a generated .npz and a tiny timm model: both sides
see the same training images, are scored on the same held-out images, process the same number of images, and
the summary's paired numbers are those of the rows."""
import json
import sys

import numpy as np

from tests.conftest import REPO, make_image, write_recipe

sys.path.insert(0, str(REPO / "benchmarks"))


def _npz(path, n=40):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = np.stack([np.asarray(make_image(int(c), rng, size=24, mode="L")) for c in labels])
    np.savez(path, train_images=images[:32], train_labels=labels[:32, None], val_images=images[32:],
             val_labels=labels[32:, None])
    return path


def test_folds_are_grouped_disjoint_and_cover_the_pool():
    import recipes_vs_example as rve

    labels = np.array([0, 1] * 20)
    groups = [f"g{i // 2}" if i < 8 else f"g{i}" for i in range(40)]  # images 0-7 in pairs of copies
    seen = []
    for fold in range(4):
        parts = rve.fold_parts(labels, groups, 4, fold, seed=3)
        idx = np.concatenate(list(parts.values()))
        assert sorted(idx) == list(range(40))  # train, val and test partition the pool
        for key in parts:
            for other in parts:
                if key != other:
                    assert not {groups[i] for i in parts[key]} & {groups[i] for i in parts[other]}
        seen += parts["test"].tolist()
    assert sorted(seen) == list(range(40))  # every image held out exactly once


def test_an_official_validation_split_is_the_test_set_as_it_is():
    import recipes_vs_example as rve

    labels = np.array([0, 1] * 20)
    groups = [f"g{i}" for i in range(40)]
    official_val = np.arange(40) >= 32
    parts = rve.fold_parts(labels, groups, 5, 0, seed=3, test_mask=official_val)
    assert parts["test"].tolist() == list(range(32, 40))
    assert sorted(np.concatenate([parts["train"], parts["val"]])) == list(range(32))
    assert 3 <= len(parts["val"]) <= 6  # 15% of the other 32


def test_recipe_and_example_side_by_side(tmp_path, tiny_timm):
    import recipes_vs_example as rve

    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_timm), npz_file=str(_npz(tmp_path / "d.npz")),
                          image_size=24, num_train_epochs=1, per_device_train_batch_size=8, learning_rate=1e-3,
                          theta_star="val_accuracy", tta="hflip")
    results = tmp_path / "results"
    assert rve.main([str(recipe), "--seeds", "1", "--folds", "2", "--results", str(results),
                     "--work", str(tmp_path / "work")]) == 0
    rows = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["fold"]) for r in rows] == [(1, 0), (1, 1)]
    for r in rows:
        assert r["recipe_images_processed"] == r["example_images_processed"] == r["n_train"]
        assert len(r["recipe_correct"]) == len(r["example_correct"]) == r["n_test"]
    assert sum(r["n_test"] for r in rows) == 40
    s = json.loads((results / "summary.json").read_text())
    assert s["recipe_accuracy"]["mean"] == np.mean([r["recipe_accuracy"] for r in rows])
    assert s["mcnemar"]["1"]["n"] == 40
    assert "McNemar" in (results / "summary.md").read_text()
    assert not list((tmp_path / "work").rglob("data.npz"))  # the fold data is not left behind
