"""hf_medtl.train: flip test-time augmentation in the one inference path, label smoothing through the toolkit's
loss (so that the running training accuracy is still counted)."""
import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_medtl import train
from hf_medtl.recipe import load_recipe
from tests.conftest import write_recipe


def _model():
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3)
    return ViTForImageClassification(config).eval()


def _items(symmetric=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8, generator=g)
    if symmetric:
        x = (x + torch.flip(x, dims=[-1])) / 2
    return [{"pixel_values": x[i], "labels": i % 3} for i in range(6)]


def test_hflip_tta_is_the_mean_of_the_image_and_its_mirror():
    model, items = _model(), _items()
    trainer = train.inference_trainer(model)
    plain, labels = train.predict(trainer, items)
    mirrored, _ = train.predict(trainer, [{**d, "pixel_values": torch.flip(d["pixel_values"], dims=[-1])} for d in items])
    tta, tta_labels = train.predict(trainer, items, tta="hflip")
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-6) and np.array_equal(labels, tta_labels)
    assert not np.allclose(tta, plain, atol=1e-4)  # the mirror changed something on these images
    sym = _items(symmetric=True)  # an image its mirror leaves unchanged: TTA is the plain prediction
    assert np.allclose(train.predict(trainer, sym, tta="hflip")[0], train.predict(trainer, sym)[0], atol=1e-6)


def test_label_smoothing_goes_through_the_toolkits_loss(tmp_path, image_folder, tiny_vit):
    recipe = load_recipe(write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), data_dir=str(image_folder),
                                      label_smoothing_factor=0.1))
    import datasets

    labelled = datasets.Dataset.from_dict({"label": [0, 1, 2]})
    loss = train.loss_function(recipe, _model(), labelled)
    assert loss is not None and loss.label_smoothing == pytest.approx(0.1)
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert float(loss.per_item(logits, labels)[0]) == pytest.approx(float(expected), rel=1e-6)
    plain = load_recipe(write_recipe(tmp_path / "p.json", model_name_or_path=str(tiny_vit), data_dir=str(image_folder)))
    assert train.loss_function(plain, _model(), labelled) is None
