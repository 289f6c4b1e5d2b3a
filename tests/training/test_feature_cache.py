"""Cached features: a frozen backbone without augmentation trains the same head on cached features as on images,
reuses the cache across runs, and saves the whole model; an entry is keyed on everything that changes the features
(issue 24, class 4), an unfinished one is computed again, and a full disk is one line (class 12)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import CLASSES, errors, make_image, make_image_folder, tiny_recipe
from tests.data.cache_helpers import full_disk, live_timm, scored  # noqa: F401 (fixtures)


@pytest.mark.parametrize("head", ["linear", "bottleneck"])
def test_cached_features_train_the_same_head_as_images(tmp_path, image_folder, tiny_timm, hf_medtl_log, head):
    common = dict(num_train_epochs=2, image_size=24, finetune_strategy="linear_probe", augment=False, head=head,
                  bottleneck_dim=8, l1_feature_reg=1e-3 if head == "bottleneck" else 0.0,
                  l2_feature_reg=1e-3 if head == "bottleneck" else 0.0, n_bootstrap=0,
                  feature_cache_dir=str(tmp_path / "cache"))
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, **common)
    images = run(load_recipe(recipe, ["--cache_features", "false", "--output_dir", str(tmp_path / "uncached")]))
    assert not images["cached_features"] and not (tmp_path / "cache").exists()
    cached = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "cached")]))
    assert cached["cached_features"] and "computed once" in hf_medtl_log.text
    a, b = load_file(tmp_path / "uncached" / "model.safetensors"), load_file(tmp_path / "cached" / "model.safetensors")
    assert a.keys() == b.keys()  # the saved model is the whole backbone + head either way
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert cached["validation"]["accuracy"] == images["validation"]["accuracy"]
    assert cached["test"]["confusion_matrix"] == images["test"]["confusion_matrix"]

    hf_medtl_log.clear()
    again = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "again")]))
    assert sum("features reused" in m for m in set(hf_medtl_log.messages)) == 3
    assert "computed once" not in hf_medtl_log.text
    assert again["test"] == cached["test"]


def _probe(tmp_path, model, data, name, cache, scored, image_size=24, **extra):  # noqa: F811
    """A linear-probe run on cached features; its test probabilities at full precision."""
    recipe = tiny_recipe(tmp_path, model, data, num_train_epochs=2, learning_rate=0.05, image_size=image_size,
                         finetune_strategy="linear_probe", augment=False, n_bootstrap=0, dedupe=False,
                         feature_cache_dir=str(tmp_path / cache), output_dir=str(tmp_path / name), **extra)
    scored.clear()
    assert run(load_recipe(recipe))["cached_features"]
    return next(p for table, _, p in scored if table == "predictions_test.csv")


def said(log, text: str) -> int:
    """How many distinct log lines hold ``text`` (a line may reach the capture twice)."""
    return sum(text in m for m in set(log.messages))


def _config(**values):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **values}))
    return change


def _buffers(folder):
    """The same parameters, other BatchNorm running statistics (buffers, not parameters)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    for name in [n for n in weights if n.endswith("running_var")][:3]:
        weights[name] = weights[name] * 9
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


# (timm at 64 px: its last feature map is 2x2, where max and mean pooling differ; at 24 px it is 1x1)
CHANGES = [pytest.param("live_timm", 64, _config(model_args={"global_pool": "max"}), id="timm global_pool max"),
           pytest.param("live_timm", 64, _buffers, id="batchnorm statistics"),
           pytest.param("tiny_vit", 24, _config(hidden_act="relu"), id="vit activation", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backbone,size,change", CHANGES)
def test_a_model_that_differs_only_in_config_or_buffers_gets_its_own_features(tmp_path, request, backbone, size,
                                                                              change, scored,  # noqa: F811
                                                                              hf_medtl_log):
    base = request.getfixturevalue(backbone)
    other = tmp_path / "other"
    shutil.copytree(base, other)
    change(other)
    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))
    base_probs = _probe(tmp_path, base, data, "run_base", "cache", scored, size)
    hf_medtl_log.clear()
    served = _probe(tmp_path, other, data, "run_other", "cache", scored, size)  # the same cache folder
    assert "features reused" not in hf_medtl_log.text
    assert said(hf_medtl_log, "computed once") == 3
    fresh = _probe(tmp_path, other, data, "run_fresh", "fresh_cache", scored, size)
    assert served.tobytes() == fresh.tobytes()  # the features the other model computes itself
    assert served.tobytes() != base_probs.tobytes()  # and the change matters, so reuse would have shown


def _bmp_folder(root):
    """Uncompressed BMPs: new pixels in the same file size, so size + mtime cannot tell them apart."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(6):
            make_image(c, rng, mode="RGB").save(root / name / f"{name}_{i}.bmp")
    return root


@pytest.mark.parametrize("data_check", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_pixels_changed_in_place_with_the_mtime_restored_are_not_served_stale(tmp_path, scored, hf_medtl_log,  # noqa: F811
                                                                              live_timm, data_check):  # noqa: F811
    data = _bmp_folder(tmp_path / "data")
    before = _probe(tmp_path, live_timm, data, "first", "cache", scored, data_check=data_check)
    rows = (tmp_path / "first" / "split_manifest.csv").read_text().splitlines()[1:]
    victim = data / next(r.split(",")[0] for r in rows if r.split(",")[2] == "test")
    st = victim.stat()
    Image.fromarray(255 - np.asarray(Image.open(victim))).save(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    hf_medtl_log.clear()
    served = _probe(tmp_path, live_timm, data, "second", "cache", scored, data_check=data_check)
    assert "test: backbone features of 3 images computed once" in hf_medtl_log.text
    assert said(hf_medtl_log, "features reused") == 2  # train and validation did not change
    fresh = _probe(tmp_path, live_timm, data, "fresh", "fresh_cache", scored, data_check=data_check)
    assert served.tobytes() == fresh.tobytes()
    assert served.tobytes() != before.tobytes()


def test_a_truncated_or_unfinished_entry_is_computed_again_with_a_log_line(tmp_path, live_timm, scored,  # noqa: F811
                                                                          hf_medtl_log):
    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))
    first = _probe(tmp_path, live_timm, data, "first", "cache", scored)
    entries = sorted(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(entries) == 3 and all((p / "complete.json").is_file() for p in entries)
    arrow = next(entries[0].glob("*.arrow"))
    with open(arrow, "r+b") as f:  # cut at half: what a full disk or a killed copy leaves
        f.truncate(arrow.stat().st_size // 2)
    (entries[1] / "complete.json").unlink()  # a write that stopped before its marker
    next(entries[2].glob("*.arrow")).write_bytes(b"not arrow")
    hf_medtl_log.clear()
    second = _probe(tmp_path, live_timm, data, "second", "cache", scored)
    assert said(hf_medtl_log, "is incomplete or unreadable") == 3
    assert said(hf_medtl_log, "computed once") == 3
    assert second.tobytes() == first.tobytes()
    hf_medtl_log.clear()
    _probe(tmp_path, live_timm, data, "third", "cache", scored)
    assert said(hf_medtl_log, "features reused") == 3


def test_a_full_disk_while_storing_features_is_one_line_and_leaves_no_partial_entry(tmp_path, image_folder,
                                                                                   tiny_timm, capsys, monkeypatch):
    from hf_medtl.cli import main

    cache = tmp_path / "features"
    full_disk(monkeypatch, cache)
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         finetune_strategy="linear_probe", augment=False, feature_cache_dir=str(cache))
    assert main(["finetune", str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and f"feature cache '{cache}'" in lines[0], lines
    assert "no space left" in lines[0] and "feature_cache_dir" in lines[0]
    assert not [p for p in cache.rglob("*") if p.is_file()]  # the partial entry went at once
    assert not (tmp_path / "run" / "model.safetensors").exists() and not (tmp_path / "run" / "metrics.json").exists()
