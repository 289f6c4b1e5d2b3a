"""Class imbalance: class weights, focal loss and the balanced sampler change what they should, in one process and
in a real 2-process CPU launch."""
import json
import re
from collections import Counter

import pytest
import torch

from hf_medtl.finetune import run
from hf_medtl.training.losses import ClassificationLoss, balanced_class_weights, resolve_class_weights
from hf_medtl.config.recipe import load_recipe
from hf_medtl.training.trainer import BalancedSampler
from tests.conftest import launch_two_ranks, make_image_folder, tiny_recipe


def out(logits):
    return {"logits": logits}


def test_balanced_weights_are_inverse_frequency():
    assert balanced_class_weights([0] * 6 + [1] * 2 + [2] * 4, 3) == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    assert resolve_class_weights("balanced", [0, 0, 0, 1], ["a", "b"]) == pytest.approx([4 / 6, 2.0])
    assert resolve_class_weights([1, 3], [0, 1], ["a", "b"]) == [1.0, 3.0]
    with pytest.raises(Exception, match="class_weights has 3 numbers but there are 2 classes"):
        resolve_class_weights([1, 2, 3], [0, 1], ["a", "b"])


def test_class_weights_and_focal_change_the_loss_as_they_should():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 3), torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    with torch.no_grad():
        plain = ClassificationLoss()(out(logits), labels)
        weighted = ClassificationLoss([0.5, 2.0, 4.0])(out(logits), labels)
        focal = ClassificationLoss(loss="focal", focal_gamma=2.0)(out(logits), labels)
        focal0 = ClassificationLoss(loss="focal", focal_gamma=0.0)(out(logits), labels)
    assert plain.item() == pytest.approx(ce.mean().item(), rel=1e-6)
    w = torch.tensor([0.5, 2.0, 4.0])[labels]
    assert weighted.item() == pytest.approx((w * ce).sum().item() / 8, rel=1e-6)
    p_t = torch.softmax(logits, -1)[torch.arange(8), labels]
    assert focal.item() == pytest.approx(((1 - p_t) ** 2 * ce).mean().item(), rel=1e-5)
    assert focal0.item() == pytest.approx(plain.item(), rel=1e-6) and focal.item() < plain.item()
    # The minority class's gradient grows with its weight; the others' stay.
    grads = []
    for loss_fn in (ClassificationLoss(), ClassificationLoss([1.0, 1.0, 4.0])):
        x = logits.clone().requires_grad_(True)
        loss_fn(out(x), labels).backward()
        grads.append(x.grad)
    assert torch.allclose(grads[1][7], 4 * grads[0][7]) and torch.allclose(grads[1][:7], grads[0][:7])


def test_balanced_sampler_draws_classes_evenly_and_reproducibly():
    labels = [0] * 90 + [1] * 10
    sampler = BalancedSampler(labels, seed=3)
    draws = [labels[i] for _ in range(20) for i in (sampler.set_epoch(_) or list(sampler))]
    share = Counter(draws)[1] / len(draws)
    assert len(list(sampler)) == 100 and 0.45 < share < 0.55  # 10% of the data, half of the draws
    sampler.set_epoch(4)
    again = BalancedSampler(labels, seed=3)
    again.set_epoch(4)
    assert list(sampler) == list(again)
    sampler.set_epoch(5)
    assert list(sampler) != list(again)


def test_imbalance_options_end_to_end(tmp_path, tiny_timm, hf_medtl_log):
    images = make_image_folder(tmp_path / "imbalanced", per_class=(24, 6, 6))
    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_timm, images, num_train_epochs=2, image_size=24,
                                          class_weights="balanced", sampler="balanced", loss="focal", n_bootstrap=0)))
    assert metrics["epochs_run"] == 2
    assert re.search(r"class weights: benign 0\.4\d+, malignant 2\.\d+, normal 2\.\d+", hf_medtl_log.text)
    resolved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert resolved["class_weights"] == "balanced" and resolved["sampler"] == "balanced" and resolved["loss"] == "focal"


@pytest.mark.slow
def test_imbalance_options_in_two_processes(tmp_path, tiny_vit):
    """Balanced sampler + class weights + focal loss in a real 2-process CPU launch: both ranks decide alike."""

    images = make_image_folder(tmp_path / "imbalanced", per_class=(24, 6, 6))
    recipe = tiny_recipe(tmp_path, tiny_vit, images, num_train_epochs=2, use_cpu=True, per_device_train_batch_size=4,
                         class_weights="balanced", sampler="balanced", loss="focal", n_bootstrap=0)
    proc, by_rank = launch_two_ranks(recipe)
    assert len(by_rank["0"]) == 2 and by_rank["0"] == by_rank["1"], proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 2
