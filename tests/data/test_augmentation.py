"""Augmentation for small data: TrivialAugment / RandAugment on training images (evaluation stays the processor's
border-safe resize) and MixUp / CutMix on training batches (soft labels, taken by the loss and the running training
accuracy), through `hf-medtl finetune` on generated images."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_medtl.finetune import main
from hf_medtl.training import mixing
from hf_medtl.training.callbacks import RunningAccuracy
from hf_medtl.training.losses import ClassificationLoss
from tests.conftest import assert_pipeline_serves, errors, make_image, tiny_recipe


def _prep():
    from transformers import ViTImageProcessor

    from hf_medtl.data.transforms import preprocessing_from_processor

    processor = ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return processor, preprocessing_from_processor(processor)


@pytest.mark.parametrize("policy", ["trivial", "rand"])
def test_auto_augment_changes_training_images_and_leaves_evaluation_the_processor(policy):
    from hf_medtl.data.transforms import build_transforms

    processor, prep = _prep()
    image = make_image(1, np.random.default_rng(0), size=40)
    # Crop, rotation and flip off: what remains random in training is the policy alone.
    fixed = dict(crop_scale_min=1.0, rotation_degrees=0.0, hflip_prob=0.0)
    plain, _ = build_transforms(prep, **fixed)
    train, evaluation = build_transforms(prep, **fixed, auto_augment=policy, rand_augment_magnitude=15)
    torch.manual_seed(0)
    outs = [train(image) for _ in range(20)]
    assert all(o.shape == (3, 24, 24) for o in outs)
    changed = sum(not torch.equal(o, plain(image)) for o in outs)
    assert changed >= 10, changed
    # Evaluation: the processor's own tensor (the whole image squashed, never cropped), whatever the keys say.
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    for tf in (evaluation, build_transforms(prep, auto_augment=policy)[1], build_transforms(prep)[1]):
        assert torch.equal(tf(image), expected)
    off, off_eval = build_transforms(prep, augment=False, auto_augment=policy)
    assert off is off_eval  # augment false: training images are the evaluation ones


def test_a_runs_evaluation_tensors_are_the_processors_whatever_the_augmentation_keys(image_folder, tiny_timm):
    """Validation, test and the unaugmented training copy: eval_transform(processor) of each decoded file."""
    from transformers import AutoModelForImageClassification, AutoImageProcessor

    from hf_medtl.config.recipe import DataArguments
    from hf_medtl.data import load_splits, preprocessing_from_processor, to_datasets
    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.models import serving_processor

    model = AutoModelForImageClassification.from_pretrained(tiny_timm)
    processor = serving_processor(model, AutoImageProcessor.from_pretrained(tiny_timm), 24)
    keys = dict(data_dir=str(image_folder), auto_augment="rand", rand_augment_magnitude=20, mixup_alpha=0.4,
                cutmix_alpha=1.0)
    splits = load_splits(DataArguments(**keys), 0)
    sets = to_datasets(splits, preprocessing_from_processor(processor), DataArguments(**keys))
    transform = eval_transform(processor)
    for split, name in (("validation", "validation"), ("test", "test"), ("train_eval", "train")):
        files = splits.files(name)
        for i in range(len(files)):
            assert torch.equal(sets[split][i]["pixel_values"], transform(decode(files[i].source))), (split, i)


def _batch(n=4, size=6):
    """Image i is filled with i and labelled i, so that a mix can be read off its pixels."""
    return [{"pixel_values": torch.full((3, size, size), float(i)), "labels": i} for i in range(n)]


def test_mixup_batch_has_soft_labels_and_mixed_pixels():
    torch.manual_seed(0)
    out = mixing.MixingCollator(4, mixup_alpha=0.4)(_batch())
    labels, pixels = out["labels"], out["pixel_values"]
    assert labels.shape == (4, 4) and torch.allclose(labels.sum(1), torch.ones(4))
    for i in range(4):
        lam = labels[i, i]
        assert torch.allclose(pixels[i], torch.full_like(pixels[i], lam * i + (1 - lam) * ((i - 1) % 4)))


def test_cutmix_batch_pastes_a_box_and_mixes_labels_by_its_area():
    torch.manual_seed(1)
    out = mixing.MixingCollator(4, cutmix_alpha=1.0)(_batch(size=16))
    labels, pixels = out["labels"], out["pixel_values"]
    assert torch.allclose(labels.sum(1), torch.ones(4))
    for i in range(4):
        j = (i - 1) % 4
        assert set(pixels[i].unique().tolist()) <= {float(i), float(j)}
        pasted = (pixels[i] == j).float().mean()
        assert pasted == pytest.approx(float(labels[i, j]), abs=1e-6)


def test_unmixed_batches_keep_their_labels_as_one_hot_rows():
    out = mixing.MixingCollator(4, mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.0)(_batch())
    assert torch.equal(out["labels"], torch.eye(4)) and torch.equal(out["pixel_values"][2], torch.full((3, 6, 6), 2.0))


@pytest.mark.parametrize("kind", [dict(), dict(label_smoothing=0.1), dict(class_weights=[1.0, 2.0, 0.5]),
                                  dict(loss="focal", focal_gamma=2.0)])
def test_soft_loss_of_one_hot_rows_is_the_hard_loss(kind):
    """The soft-target loss extends the hard one: one-hot rows (counted by the Trainer as N x classes items) give
    the same loss as the class ids (N items)."""
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    hard = torch.tensor([0, 2, 1, 1, 0])
    soft = torch.nn.functional.one_hot(hard, 3).float()
    loss = ClassificationLoss(**kind)
    with torch.no_grad():
        assert loss({"logits": logits}, soft, torch.tensor(15)) == pytest.approx(float(loss({"logits": logits}, hard,
                                                                                             torch.tensor(5))), abs=1e-6)


def test_running_accuracy_counts_a_mixed_image_by_its_labels_largest_class():
    running = RunningAccuracy()
    loss = ClassificationLoss(observer=running.count)  # as build_trainer wires them
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    labels = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    loss({"logits": logits}, labels, torch.tensor(6))
    train_loss, accuracy = running.totals("cpu")
    expected = torch.nn.functional.cross_entropy(logits.detach(), labels).item()
    assert accuracy == pytest.approx(2 / 3) and train_loss == pytest.approx(expected)


def _count_split(out, split):
    with open(out / "split_manifest.csv") as f:
        return sum(r["split"] == split for r in csv.DictReader(f))


def test_finetune_with_trivial_augment_mixup_and_cutmix_serves_what_it_scored(tmp_path, tiny_timm, image_folder,
                                                                             monkeypatch):

    seen = []
    collate = mixing.MixingCollator.__call__
    monkeypatch.setattr(mixing.MixingCollator, "__call__", lambda self, f: seen.append(len(f)) or collate(self, f))
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, image_size=24, num_train_epochs=2, n_bootstrap=0,
                         auto_augment="trivial", mixup_alpha=0.4, cutmix_alpha=1.0)
    assert main([str(recipe)]) == 0
    out = tmp_path / "run"
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and all(0.0 <= h["train_accuracy"] <= 1.0 for h in history)
    n_train = _count_split(out, "train")
    assert seen and sum(seen) <= 2 * n_train  # training batches only: validation and test are never mixed
    assert_pipeline_serves(out, image_folder, atol=1e-5)


@pytest.mark.parametrize("values,key", [
    (dict(auto_augment="rand", rand_augment_magnitude=31), "rand_augment_magnitude"),
    (dict(auto_augment="rand", rand_augment_magnitude=-1), "rand_augment_magnitude"),
    (dict(rand_augment_magnitude=5), "rand_augment_magnitude"),
    (dict(mixup_alpha=-0.1), "mixup_alpha"), (dict(cutmix_alpha=-1.0), "cutmix_alpha"),
    (dict(mixup_alpha=0.4, mixup_prob=1.5), "mixup_prob"), (dict(mixup_alpha=0.4, mixup_prob=-0.1), "mixup_prob"),
    (dict(mixup_prob=0.5), "mixup_prob"),
    (dict(auto_augment="trivial", augment=False), "auto_augment"), (dict(cutmix_alpha=1.0, augment=False), "cutmix_alpha"),
    (dict(auto_augment="strong"), "auto_augment")])
def test_bad_augmentation_values_are_one_line_errors(tmp_path, tiny_timm, image_folder, capsys, values, key):
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, n_bootstrap=0, **values)
    assert main([str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and key in lines[0], lines
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_mixing_multi_label_data_is_a_one_line_error(tmp_path, tiny_timm, capsys):
    images = tmp_path / "ml"
    images.mkdir()
    rows = ["path,a,b"]
    for i in range(12):
        Image.fromarray(np.full((24, 24), i * 10, np.uint8)).save(images / f"{i}.png")
        rows.append(f"{i}.png,{i % 2},{(i // 2) % 2}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = tiny_recipe(tmp_path, tiny_timm, None, data_dir=None, multilabel_csv=str(images / "labels.csv"),
                         n_bootstrap=0, mixup_alpha=0.4)
    assert main([str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "'mixup_alpha'" in lines[0] and "multi-label" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_auto_augment_reaches_the_runs_training_images(tmp_path, tiny_vit):
    """The recipe key reaches the datasets a run trains on: with crop, rotation and flip off, TrivialAugment alone
    changes the training images between two reads, and the unaugmented copies stay fixed."""
    import numpy as np
    from transformers import AutoImageProcessor

    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.data import load_splits, preprocessing_from_processor, to_datasets
    from tests.conftest import make_image_folder, write_recipe

    images = make_image_folder(tmp_path / "d", per_class=(6, 6, 6))
    recipe = load_recipe(write_recipe(tmp_path / "r.json", data_dir=str(images), auto_augment="trivial",
                                      crop_scale_min=1.0, rotation_degrees=0.0, hflip_prob=0.0, data_cache=False))
    splits = load_splits(recipe.data, 0, tmp_path / "out")
    sets = to_datasets(splits, preprocessing_from_processor(AutoImageProcessor.from_pretrained(tiny_vit)), recipe.data)
    reads = [np.stack([np.asarray(sets["train"][i]["pixel_values"]) for i in range(len(sets["train"]))]) for _ in range(3)]
    assert any(not np.array_equal(reads[0], r) for r in reads[1:])
    plain = [np.stack([np.asarray(sets["train_eval"][i]["pixel_values"]) for i in range(len(sets["train_eval"]))])
             for _ in range(2)]
    assert np.array_equal(plain[0], plain[1])
