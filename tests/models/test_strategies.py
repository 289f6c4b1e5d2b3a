"""Fine-tuning strategies: which parameters train in each (HF CNN, HF ViT, timm), gradual unfreezing at the listed
epochs (and after resume), discriminative LR groups that keep their ratios across the adaptive reductions."""
import json

import pytest
import torch

from hf_medtl.training.callbacks import scale_lr
from hf_medtl.finetune import run
from hf_medtl.models import backbone_stages, load_backbone, param_groups
from hf_medtl.config.recipe import ModelArguments, RecipeError, load_recipe
from tests.conftest import launch_two_ranks, saved_classifier, tiny_recipe, write_recipe

BACKBONES = ["tiny_resnet", "tiny_convnext", "tiny_vit", "tiny_timm"]


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def head_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(("classifier.", "timm_model.classifier."))}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_requires_grad_under_each_strategy(backbone, request):
    path = str(request.getfixturevalue(backbone))
    model, _ = load_backbone(ModelArguments(model_name_or_path=path), ["a", "b"])
    every = {n for n, _ in model.named_parameters()}
    stages = backbone_stages(model)
    head = head_names(model)
    # Stages are the backbone's own modules, input side first; with the head they cover every parameter once.
    assert len(stages) >= 3 and sum(map(len, stages)) + len(head) == len(every)
    assert set().union(*map(set, stages)) | head == every
    first = {"tiny_resnet": "resnet.embedder.", "tiny_convnext": "convnext.embeddings.", "tiny_vit": "vit.embeddings.",
             "tiny_timm": "timm_model.conv_stem."}[backbone]
    assert all(n.startswith(first) or "bn1" in n for n in stages[0])
    assert trainable(model) == every

    probe, _ = load_backbone(ModelArguments(model_name_or_path=path, finetune_strategy="linear_probe"), ["a", "b"])
    assert trainable(probe) == head and head

    for k in (1, 2):
        partial, _ = load_backbone(ModelArguments(model_name_or_path=path, finetune_strategy="partial",
                                                  trainable_stages=k), ["a", "b"])
        assert trainable(partial) == head | {n for s in stages[-k:] for n in s}

    gradual, _ = load_backbone(ModelArguments(model_name_or_path=path, finetune_strategy="gradual",
                                              unfreeze_at_epochs=[2, 4]), ["a", "b"])
    assert trainable(gradual) == head  # epoch 1: the head only


def test_trainable_stages_beyond_the_backbone_is_one_clear_line(tiny_resnet):
    from hf_medtl.models import ModelError

    with pytest.raises(ModelError, match="trainable_stages 9: this backbone has 3 stages"):
        load_backbone(ModelArguments(model_name_or_path=str(tiny_resnet), finetune_strategy="partial",
                                     trainable_stages=9), ["a", "b"])


@pytest.mark.parametrize("values,message", [
    ({"finetune_strategy": "gradual"}, "needs 'unfreeze_at_epochs'"),
    ({"unfreeze_at_epochs": [2]}, "applies to finetune_strategy 'gradual'"),
    ({"finetune_strategy": "partial", "trainable_stages": -1}, "'trainable_stages' must be >= 0"),
    ({"layer_decay": 1.5}, "'layer_decay' must lie in"),
    ({"head": "mlp"}, "'head' must be one of"),
    ({"head_init": "glorot"}, "'head_init' must be one of"),
])
def test_bad_strategy_keys_are_refused(tmp_path, values, message):
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="x", data_dir=".", **values)
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_layer_decay_groups_and_ratios_survive_adaptive_reductions(tiny_resnet):
    from transformers import get_scheduler

    model, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_resnet)), ["a", "b"])
    groups = param_groups(model, 1e-3, 0.01, {n for n, _ in model.named_parameters() if "bias" not in n},
                          backbone_lr_multiplier=0.1, layer_decay=0.5)
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    stages = backbone_stages(model)
    assert by_param[id(names["classifier.1.weight"])] == pytest.approx(1e-3)
    for i, stage in enumerate(stages):  # S=3 stages: 0.1 x 0.5^(3-i)
        assert [by_param[id(names[n])] for n in stage] == pytest.approx([1e-3 * 0.1 * 0.5 ** (3 - i)] * len(stage))
    assert sum(len(g["params"]) for g in groups) == len(names)  # frozen or not, every parameter has a group

    optimizer = torch.optim.AdamW(groups)
    scheduler = get_scheduler("constant", optimizer)
    before = [g["lr"] for g in optimizer.param_groups]
    scale_lr(optimizer, scheduler, 0.5)
    scale_lr(optimizer, scheduler, 0.5)
    optimizer.step()
    scheduler.step()  # the Trainer's own scheduler steps after every batch; the reductions must survive it
    after = [g["lr"] for g in optimizer.param_groups]
    assert after == pytest.approx([0.25 * lr for lr in before])


def test_gradual_unfreezes_at_the_listed_epochs_and_after_resume(tmp_path, image_folder, tiny_timm):
    common = dict(num_train_epochs=3, image_size=24, finetune_strategy="gradual", unfreeze_at_epochs=[2, 3],
                  layer_decay=0.8, save_strategy="epoch", adaptive_lr=False, n_bootstrap=0)
    straight = run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, **common)))
    phases = straight["trainable_parameters"]
    assert [p["from_epoch"] for p in phases] == [1, 2, 3]
    assert phases[0]["trainable_params"] < phases[1]["trainable_params"] < phases[2]["trainable_params"] < \
        straight["total_parameters"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["trainable_parameters"] == phases

    # Resumed after epoch 1: epoch 2 starts with one stage unfrozen, as in the uninterrupted run.
    first = min((tmp_path / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, **common),
                              ["--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", str(first)]))
    assert resumed["trainable_parameters"] == phases
    assert resumed["test"]["accuracy"] == straight["test"]["accuracy"]


def test_partial_trains_only_the_last_stage_end_to_end(tmp_path, image_folder, tiny_resnet):
    from transformers import AutoModelForImageClassification

    run(load_recipe(tiny_recipe(tmp_path, tiny_resnet, image_folder, num_train_epochs=1, finetune_strategy="partial",
                                trainable_stages=1, image_size=32, n_bootstrap=0)))
    before = AutoModelForImageClassification.from_pretrained(tiny_resnet).state_dict()
    after = saved_classifier(tmp_path / "run").state_dict()
    changed = {k.split(".layers.")[0] for k in after if "classifier" not in k and not after[k].equal(before[k])}
    # Frozen stages run in inference mode: not even their BatchNorm statistics move.
    assert changed == {"resnet.encoder.stages.1"}


@pytest.mark.slow
def test_gradual_with_layer_decay_in_two_processes(tmp_path, image_folder, tiny_vit):
    """DDP wraps every parameter (gradual starts frozen only after the wrap): both ranks unfreeze and decide alike."""
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, use_cpu=True, per_device_train_batch_size=4,
                         finetune_strategy="gradual", unfreeze_at_epochs=[2], layer_decay=0.5, n_bootstrap=0)
    proc, by_rank = launch_two_ranks(recipe)
    assert len(by_rank["0"]) == 2 and by_rank["0"] == by_rank["1"], proc.stderr[-3000:]
    phases = json.loads((tmp_path / "run" / "metrics.json").read_text())["trainable_parameters"]
    assert [p["from_epoch"] for p in phases] == [1, 2]
