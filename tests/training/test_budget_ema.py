"""The run's budget (min_train_steps, time_budget_minutes), the EMA of the weights (ema_decay), stochastic weight
averaging (swa_epochs) and the imbalance-aware θ* rules (val_balanced_accuracy, val_f1_macro), through `hf-medtl finetune` on generated images."""
import json
import math

import pytest

from hf_medtl.finetune import main
from hf_medtl.training import budget as budget_module
from hf_medtl.training import swa as swa_module
from hf_medtl.training.theta import ThetaStar
from tests.conftest import assert_pipeline_serves, errors, make_image_folder, tiny_recipe


def finetune(tmp_path, model_dir, images, **extra):
    recipe = tiny_recipe(tmp_path, model_dir, images, image_size=24, n_bootstrap=0, **extra)
    assert main([str(recipe)]) == 0
    out = tmp_path / "run"
    return out, json.loads((out / "metrics.json").read_text()), json.loads((out / "history.json").read_text())


@pytest.mark.parametrize("n,batch,world,accumulate,drop_last,steps", [
    (18, 8, 1, 1, False, 3), (18, 8, 1, 1, True, 2), (18, 8, 2, 1, False, 2), (18, 8, 1, 2, False, 2),
    (40, 8, 1, 2, False, 3), (3, 8, 1, 1, True, 1)])
def test_steps_per_epoch_counts_as_the_trainer_does(n, batch, world, accumulate, drop_last, steps):
    from types import SimpleNamespace

    args = SimpleNamespace(per_device_train_batch_size=batch, world_size=world, gradient_accumulation_steps=accumulate)
    assert budget_module.steps_per_epoch(n, args, drop_last) == steps


def test_min_train_steps_below_the_recipes_epochs_keeps_them():
    from types import SimpleNamespace

    args = SimpleNamespace(per_device_train_batch_size=8, world_size=1, gradient_accumulation_steps=1,
                           num_train_epochs=5.0)
    schedule = SimpleNamespace(min_train_steps=6, time_budget_minutes=None)
    plan = budget_module.plan_epochs(schedule, args, 18, False)
    assert plan.epochs == 5.0 and plan.chosen_by == "num_train_epochs" and plan.steps_per_epoch == 3
    assert "stopped_by" not in plan.as_dict()  # the time budget's keys only once it has decided something


def always_wins(monkeypatch, source: str, seen: list | None = None) -> None:
    """θ*'s owner keeps every offer from ``source`` ("ema", "swa"), as if it won under the rule (the rules
    themselves are tested apart); ``seen`` gets a copy of each weights kept."""
    offer = ThetaStar.offer

    def keep(self, candidate, state, from_source):
        if from_source != source:
            return offer(self, candidate, state, from_source)
        weights = state()
        if seen is not None:
            seen.append({k: v.detach().clone() for k, v in weights.items()})
        self.keep(candidate["epoch"], weights, from_source)
        return True

    monkeypatch.setattr(ThetaStar, "offer", keep)


def test_min_train_steps_derives_the_epoch_count(tmp_path, tiny_vit, hf_medtl_log):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    out, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=2, min_train_steps=10,
                                     adaptive_lr=False, theta_star="last")
    budget, n_train = metrics["budget"], metrics["split_counts"]["train"]
    steps = math.ceil(n_train / 8) if n_train % 8 != 1 else n_train // 8
    assert budget["steps_per_epoch"] == steps and budget["min_train_steps"] == 10
    assert budget["epochs"] == math.ceil(10 / steps) > 2 and budget["chosen_by"] == "min_train_steps"
    assert len(history) == metrics["epochs_run"] == budget["epochs"]
    assert any(line.startswith(f"budget: {budget['epochs']:g} epochs") for line in hf_medtl_log.messages)
    card = (out / "README.md").read_text()  # the card says how the budget was chosen
    assert (f"Budget: at most {budget['epochs']:g} epochs = ceil(min_train_steps 10 / {steps} optimiser steps per "
            "epoch), more than num_train_epochs 2") in card


def test_the_adaptive_schedule_still_stops_a_run_with_a_step_budget(tmp_path, tiny_vit):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=2, min_train_steps=60, threshold=0.0,
                                   patience=1, stop_patience=1)
    assert metrics["budget"]["epochs"] == 20 and len(history) < 20 and history[-1]["stop"]


def test_without_a_budget_the_recipes_epochs_are_kept(tmp_path, tiny_vit):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=2, adaptive_lr=False)
    assert metrics["budget"]["chosen_by"] == "num_train_epochs" and len(history) == 2
    assert "stopped_by" not in metrics["budget"]


def test_a_time_budget_stops_the_run_after_the_epochs_that_fit(tmp_path, tiny_vit, monkeypatch, hf_medtl_log):
    ticks = iter(range(0, 10_000, 60))  # every reading of the clock is a minute later: the first epoch takes 60 s
    monkeypatch.setattr(budget_module, "clock", lambda: next(ticks))
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=5, time_budget_minutes=2.5,
                                   adaptive_lr=False)
    assert len(history) == 2 and metrics["epochs_run"] == 2  # 150 s / 60 s per epoch
    budget = metrics["budget"]
    assert budget["first_epoch_s"] == 60 and budget["time_budget_epochs"] == 2
    assert budget["stopped_by"] == "time_budget" and budget["time_budget_minutes"] == 2.5
    assert any("the run trains at most 2 of 5 epochs" in line for line in hf_medtl_log.messages)


def test_the_ema_is_scored_every_epoch_and_theta_star_records_when_it_wins(tmp_path, tiny_vit):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=3, ema_decay=0.9,
                                   adaptive_lr=False, theta_star="val_loss")
    assert all(isinstance(h["ema_val_loss"], float) and 0 <= h["ema_val_accuracy"] <= 1 for h in history)
    # θ* is the best validation loss of the live and the averaged weights together.
    candidates = [(h["val_loss"], h["epoch"]) for h in history] + [(h["ema_val_loss"], h["epoch"]) for h in history]
    best_loss = min(loss for loss, _ in candidates)
    assert metrics["best_epoch"] in [e for loss, e in candidates if loss == best_loss]
    won = [h["epoch"] for h in history if h.get("ema_best")]
    if won and won[-1] == metrics["best_epoch"]:
        assert history[won[-1] - 1]["ema_val_loss"] == best_loss


def test_under_a_rule_that_compares_no_scores_the_ema_is_scored_but_not_kept(tmp_path, tiny_vit, hf_medtl_log):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=2, ema_decay=0.9,
                                   adaptive_lr=False, theta_star="last")
    assert all("ema_val_loss" in h and not h.get("ema_best") for h in history) and metrics["best_epoch"] == 2
    assert any("the EMA is scored each epoch but never kept" in line for line in hf_medtl_log.messages)


def test_when_the_ema_wins_the_saved_model_is_the_ema_and_serves_the_runs_predictions(tmp_path, tiny_timm,
                                                                                      monkeypatch):
    """The EMA is made to win at every epoch (its rule is tested above), so θ* is the last epoch's EMA weights."""
    from safetensors.torch import load_file

    seen = []
    always_wins(monkeypatch, "ema", seen)
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    out, metrics, history = finetune(tmp_path, tiny_timm, images, num_train_epochs=3, ema_decay=0.9,
                                     adaptive_lr=False, learning_rate=5e-3)
    assert len(seen) == 3 and metrics["best_epoch"] == 3 and history[-1]["ema_best"] is True
    assert metrics["best_source"] == "ema"  # the record's θ* source, as stages.summary reports it
    # (the default flip TTA saves the trained model as the one member of its views' wrapper)
    saved = {k.removeprefix("members.0."): v for k, v in load_file(str(out / "model.safetensors")).items()}
    ema = seen[-1]
    assert set(saved) == set(ema)
    for key, value in ema.items():
        assert (saved[key].float() - value.float()).abs().max() <= 1e-6, key
    assert_pipeline_serves(out, images, atol=1e-5)


@pytest.mark.parametrize("rule", ["val_balanced_accuracy", "val_f1_macro"])
def test_theta_star_follows_balanced_accuracy_or_macro_f1(tmp_path, tiny_vit, rule):
    images = make_image_folder(tmp_path / "images", per_class=(14, 6, 4))
    _, metrics, history = finetune(tmp_path, tiny_vit, images, num_train_epochs=4, adaptive_lr=False,
                                   theta_star=rule)
    assert all(0 <= h["val_balanced_accuracy"] <= 1 and 0 <= h["val_f1_macro"] <= 1 for h in history)
    best = min(history, key=lambda h: (-h[rule], h["val_loss"]))  # ties: the lower validation loss
    assert metrics["best_epoch"] == best["epoch"]


@pytest.mark.parametrize("key,value", [("min_train_steps", 0), ("time_budget_minutes", 0), ("time_budget_minutes", -1),
                                       ("ema_decay", 0), ("ema_decay", 1.0), ("ema_decay", 1.5),
                                       ("swa_epochs", 1), ("swa_epochs", 0), ("swa_epochs", 2.5)])
def test_bad_budget_and_ema_values_are_one_line_errors(tmp_path, tiny_vit, image_folder, capsys, key, value):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, n_bootstrap=0, **{key: value})
    assert main([str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and f"'{key}'" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def _bn_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4))


class _Pixels(__import__("torch").nn.Module):
    """A model called as the Trainer's models are: model(pixel_values=...)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, pixel_values):
        return self.net(pixel_values)


def test_batch_norm_recomputed_as_torch_update_bn_does_and_frozen_layers_keep_theirs():
    import copy

    import torch
    from torch.optim.swa_utils import update_bn

    from hf_medtl.models.strategies import keep_frozen_in_eval_mode

    batches = [torch.randn(5, 3, 8, 8) * (i + 1) + i for i in range(4)]
    ours, reference = _Pixels(_bn_net()), _bn_net()
    reference.load_state_dict(ours.net.state_dict())
    assert swa_module.recompute_batch_norm(ours, [{"pixel_values": b} for b in batches]) == 2
    update_bn(batches, reference)
    for (name, a), b in zip(ours.net.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert ours.training and ours.net[1].momentum == 0.1  # mode and momentum as they were
    # A frozen first block (the frozen strategies' hook puts it in eval mode) keeps its statistics.
    frozen = _Pixels(_bn_net())
    frozen.net[1].running_mean.fill_(3.0)
    before = copy.deepcopy(frozen.net[1].state_dict())
    for p in [*frozen.net[0].parameters(), *frozen.net[1].parameters()]:
        p.requires_grad_(False)
    frozen.net = torch.nn.Sequential(torch.nn.Sequential(frozen.net[0], frozen.net[1]), *frozen.net[2:])
    keep_frozen_in_eval_mode(frozen)
    assert swa_module.recompute_batch_norm(frozen, [{"pixel_values": b} for b in batches]) == 1
    for key, value in before.items():
        assert torch.equal(frozen.net[0][1].state_dict()[key], value), key
    assert frozen.net[2 + 1].num_batches_tracked.item() == len(batches)


def _rank_recompute(rank, port, batches, out):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = _Pixels(_bn_net())
        swa_module.recompute_batch_norm(model, [{"pixel_values": b} for b in batches[rank::2]])
        torch.save(model.net.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batch_norm_statistics_are_averaged_across_processes(tmp_path):
    """Two gloo ranks, each with half the batches, end with the same statistics: those of update_bn over them all."""
    import torch
    import torch.multiprocessing as mp
    from torch.optim.swa_utils import update_bn

    from tests.conftest import free_port

    batches = [torch.randn(5, 3, 8, 8) * (i + 1) + i for i in range(4)]
    mp.spawn(_rank_recompute, args=(free_port(), batches, str(tmp_path)), nprocs=2)
    reference = _bn_net()
    update_bn([batches[0], batches[2], batches[1], batches[3]], reference)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key, value in reference.state_dict().items():
        if "running_" in key:
            assert torch.equal(ranks[0][key], ranks[1][key]), key
            assert torch.allclose(ranks[0][key], value, atol=1e-5), key


def test_swa_averages_the_last_epochs_and_the_saved_model_serves_the_average(tmp_path, tiny_timm, monkeypatch,
                                                                           capsys):
    """The average is made to win (the comparison is θ*'s owner's, tested above): the saved model is
    the mean of the last 3 epochs' weights with BatchNorm recomputed, and pipeline() serves the run's predictions."""
    import torch
    from safetensors.torch import load_file

    averaged = []
    real_average = swa_module.average_states
    monkeypatch.setattr(swa_module, "average_states",
                        lambda states: averaged.append(states) or real_average(states))
    always_wins(monkeypatch, "swa")
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    out, metrics, history = finetune(tmp_path, tiny_timm, images, num_train_epochs=4, swa_epochs=3,
                                     adaptive_lr=False, learning_rate=5e-3)
    s = metrics["swa"]
    assert s["epochs"] == [2, 3, 4] and s["kept"] is True and metrics["best_epoch"] == 4
    assert metrics["best_source"] == "swa"
    assert s["batch_norm_layers_recomputed"] > 0 and 0 <= s["val_accuracy"] <= 1 and s["val_loss"] > 0
    (states,) = averaged
    assert len(states) == 3 and not torch.equal(states[0]["timm_model.conv_stem.weight"], states[2]["timm_model.conv_stem.weight"])
    saved = {k.removeprefix("members.0."): v for k, v in load_file(str(out / "model.safetensors")).items()}
    for key, value in states[-1].items():
        if "running_" in key or "num_batches" in key:
            continue
        mean = torch.stack([st[key].float() for st in states]).mean(0)
        assert (saved[key].float() - mean).abs().max() <= 1e-6, key
    bn = next(k for k in saved if k.endswith("running_var"))
    assert not torch.allclose(saved[bn], states[-1][bn])  # recomputed for the averaged weights
    assert_pipeline_serves(out, images, atol=1e-5)
    assert "the average of the weights of epochs 2-4 (SWA" in (out / "README.md").read_text()
    # `hf-medtl predict` gives the run's test probabilities; the ONNX export matches the PyTorch model it loads.
    import csv

    from hf_medtl.cli import main as cli

    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    capsys.readouterr()
    assert cli(["predict", str(out), *[str(images / r["path"]) for r in rows], "--format", "json"]) == 0
    served = json.loads(capsys.readouterr().out)
    classes = metrics["classes"]
    for r, p in zip(rows, served):
        assert [p["probabilities"][c] for c in classes] == pytest.approx([float(r[f"p_{c}"]) for c in classes], abs=1e-5)
    assert cli(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--check", str(images)]) == 0


def test_under_a_rule_that_compares_no_scores_swa_is_scored_but_not_kept(tmp_path, tiny_timm, hf_medtl_log):
    from safetensors.torch import load_file

    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    out, metrics, history = finetune(tmp_path, tiny_timm, images, num_train_epochs=3, swa_epochs=2,
                                     adaptive_lr=False, theta_star="last", tta="none")
    assert metrics["swa"]["epochs"] == [2, 3] and metrics["swa"]["kept"] is False and metrics["best_epoch"] == 3
    assert metrics["best_source"] == "last"
    assert any("the average is scored but never kept" in line for line in hf_medtl_log.messages)
    assert "SWA" not in (out / "README.md").read_text()
    assert load_file(str(out / "model.safetensors"))  # the last epoch's own weights, served as scored
    assert_pipeline_serves(out, images, atol=1e-5)
