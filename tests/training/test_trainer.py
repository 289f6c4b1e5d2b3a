"""train.py: the machine-dependent defaults (loader workers, precision, memory format), determinism with
loader workers, flip test-time augmentation in the one inference path, and label smoothing through the
toolkit's loss (so that the running training accuracy is still counted)."""
import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_medtl.training import trainer as train
from hf_medtl.config.training_arguments import MedTrainingArguments
from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from hf_medtl.training.trainer import _machine_defaults, is_convolutional
from tests.conftest import make_image_folder, tiny_recipe, write_recipe
from hf_medtl.inference import core


def defaults(monkeypatch, gpu: bool, bf16_ok: bool = True, cpus: int = 16, n_train: int = 5000, **args):
    training_args = MedTrainingArguments(output_dir="x", **args)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    changes = _machine_defaults(training_args, n_train)
    monkeypatch.undo()
    return changes


def test_cpu_trains_in_the_main_process_in_fp32(monkeypatch):
    c = defaults(monkeypatch, gpu=False)
    assert c["dataloader_num_workers"] == 0 and c["bf16"] is False and "fp16" not in c
    assert c["dataloader_pin_memory"] is False


def test_a_gpu_gets_workers_persistent_loaders_and_bf16_or_fp16(monkeypatch):
    c = defaults(monkeypatch, gpu=True)
    assert c["dataloader_num_workers"] == 8 and c["dataloader_persistent_workers"] and c["bf16"] is True
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOCAL_WORLD_SIZE", "4")
        assert defaults(monkeypatch, gpu=True, cpus=16)["dataloader_num_workers"] == 3  # 16 CPUs / 4 ranks - 1
    older = defaults(monkeypatch, gpu=True, bf16_ok=False)
    assert older["bf16"] is False and older["fp16"] is True
    assert defaults(monkeypatch, gpu=True, n_train=100)["dataloader_num_workers"] == 0  # tiny data: no start-up cost


def test_a_gpu_evaluates_in_large_batches_with_non_blocking_copies_and_a_cpu_as_asked(monkeypatch):
    """Issue 32: evaluation batches of at least 256 on a GPU (eval mode: the batch changes no probability) and pinned
    batches copied without blocking; on CPU the recipe's evaluation batch and accelerate's defaults stay."""
    gpu = defaults(monkeypatch, gpu=True)
    assert gpu["per_device_eval_batch_size"] == train.GPU_EVAL_BATCH == 256
    assert gpu["accelerator_config"]["non_blocking"] is True
    assert defaults(monkeypatch, gpu=True, per_device_eval_batch_size=512)["per_device_eval_batch_size"] == 512
    cpu = defaults(monkeypatch, gpu=False)
    assert "per_device_eval_batch_size" not in cpu and "accelerator_config" not in cpu
    assert train.eval_batch_size(64, gpu=False) == 64 and train.eval_batch_size(64, gpu=True) == 256


def test_the_evaluation_batch_changes_no_probability():
    """What lets a GPU evaluate in larger batches: a model in eval mode gives each image the same probabilities in
    a batch of 2 as in one batch of all."""
    from datasets import Dataset

    model, items = _model(), _items()
    ds = Dataset.from_list([{"pixel_values": i["pixel_values"].numpy(), "labels": i["labels"]} for i in items])
    ds.set_format("torch")
    small, labels = core.dataset_probabilities(train.inference_trainer(model, 2), ds)
    large, labels_large = core.dataset_probabilities(train.inference_trainer(model, 256), ds)
    assert np.array_equal(labels, labels_large)
    np.testing.assert_allclose(small, large, rtol=0, atol=1e-6)


def test_what_the_recipe_sets_is_kept(monkeypatch):
    c = defaults(monkeypatch, gpu=True, dataloader_num_workers=2, bf16=False)
    assert "dataloader_num_workers" not in c and c.get("bf16", False) is False and "fp16" not in c


def test_convolutional_backbones_are_told_from_vits(tiny_timm, tiny_vit):
    from transformers import AutoModelForImageClassification

    assert is_convolutional(AutoModelForImageClassification.from_pretrained(tiny_timm))
    assert not is_convolutional(AutoModelForImageClassification.from_pretrained(tiny_vit))


@pytest.mark.slow
def test_loader_workers_keep_the_split_and_the_metrics(tmp_path, tiny_timm):
    """Two worker processes, channels_last on: the same split and, run twice, the same metrics; without
    augmentation the same metrics as loading in the main process."""
    data = make_image_folder(tmp_path / "data", per_class=(10, 10, 10))
    out = {}
    for name, extra in {"w0": dict(dataloader_num_workers=0), "w2": dict(dataloader_num_workers=2),
                        "w2b": dict(dataloader_num_workers=2, channels_last=True),
                        "aug_a": dict(dataloader_num_workers=2, augment=True),
                        "aug_b": dict(dataloader_num_workers=2, augment=True)}.items():
        recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=2, n_bootstrap=0, dedupe=False,
                             output_dir=str(tmp_path / name), **{"augment": False, **extra})
        out[name] = run(load_recipe(recipe))
        out[name]["manifest"] = (tmp_path / name / "split_manifest.csv").read_text()
    assert out["w0"]["manifest"] == out["w2"]["manifest"] == out["aug_a"]["manifest"]
    for split in ("validation", "test"):
        assert out["w2"][split]["accuracy"] == out["w0"][split]["accuracy"]
        assert out["w2"][split]["ece"] == pytest.approx(out["w0"][split]["ece"], abs=1e-9)
        assert out["w2b"][split]["ece"] == pytest.approx(out["w0"][split]["ece"], abs=1e-4)
        assert out["aug_a"][split] == out["aug_b"][split]



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
    trainer = core.inference_trainer(model)
    plain, labels = core.dataset_probabilities(trainer, items)
    mirrored, _ = core.dataset_probabilities(trainer, [{**d, "pixel_values": torch.flip(d["pixel_values"], dims=[-1])} for d in items])
    tta, tta_labels = core.dataset_probabilities(trainer, items, tta="hflip")
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-6) and np.array_equal(labels, tta_labels)
    assert not np.allclose(tta, plain, atol=1e-4)  # the mirror changed something on these images
    sym = _items(symmetric=True)  # an image its mirror leaves unchanged: TTA is the plain prediction
    assert np.allclose(core.dataset_probabilities(trainer, sym, tta="hflip")[0], core.dataset_probabilities(trainer, sym)[0], atol=1e-6)


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
    plain = load_recipe(write_recipe(tmp_path / "p.json", model_name_or_path=str(tiny_vit), data_dir=str(image_folder),
                                     label_smoothing_factor=0.0))
    assert train.loss_function(plain, _model(), labelled) is None
