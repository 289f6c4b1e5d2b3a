"""Cached features: a frozen backbone without augmentation trains the same head on cached features as on images,
reuses the cache across runs, and saves the whole model."""
import pytest
import torch
from safetensors.torch import load_file

from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import tiny_recipe


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
