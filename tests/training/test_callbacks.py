"""AdaptiveLRCallback inside real Trainer runs: LR reductions reach the optimizer and survive the Trainer's
scheduler, the stop ends training, and the model ends holding θ*, not the last epoch's weights."""
import pytest
import torch
from transformers import (Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification,
                          default_data_collator)

from hf_medtl.training.callbacks import AdaptiveLRCallback, RunningAccuracy
from hf_medtl.training.schedule import AdaptiveSchedule
from hf_medtl.training.theta import ThetaStar
from hf_medtl.training.trainer import accuracy
from tests.training.test_schedule import TRACE


class TraceSchedule(AdaptiveSchedule):
    """The real state machine, fed the worked trace's (A, L) instead of the measured ones."""

    def step(self, train_accuracy, val_loss):
        _, a, loss, *_ = TRACE[self.state.epochs]
        return super().step(a, loss)


class Snapshots(TrainerCallback):
    def __init__(self):
        self.weights, self.lrs = {}, {}

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kw):
        epoch = round(state.epoch)
        self.weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.lrs[epoch] = optimizer.param_groups[0]["lr"]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=2)
    return ViTForImageClassification(config)


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return [{"pixel_values": x[i], "labels": int(y[i])} for i in range(n)]


def trainer_for(callback, tmp_path, epochs, lr=1e-2, scheduler="linear", extra=()):
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs, learning_rate=lr,
                             per_device_train_batch_size=4, per_device_eval_batch_size=8, eval_strategy="epoch",
                             save_strategy="no", logging_strategy="no", lr_scheduler_type=scheduler,
                             report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
    return Trainer(model=tiny_model(), args=args, train_dataset=tiny_data(), eval_dataset=tiny_data(8, seed=1),
                   data_collator=default_data_collator, compute_metrics=accuracy, callbacks=[callback, *extra])


def test_trace_drives_lr_stop_and_best_weights_in_a_real_trainer(tmp_path):
    callback, snaps = AdaptiveLRCallback(TraceSchedule()), Snapshots()
    lr0, epochs, steps_per_epoch = 1e-2, 20, 4
    trainer = trainer_for(callback, tmp_path, epochs, lr=lr0, extra=[snaps])
    trainer.train()

    # The stop at epoch 11 ended training early.
    assert len(callback.history) == 11 and trainer.state.global_step == 11 * steps_per_epoch
    assert [h["reduced"] for h in callback.history].count(True) == 2 and callback.history[-1]["stop"]

    # Reductions reached the optimizer and survived the linear schedule: lr = lr0 * scale * linear decay.
    total = epochs * steps_per_epoch

    def expected(epoch, scale):  # LR seen at the end of `epoch`, after the scheduler stepped
        return lr0 * scale * (1 - epoch * steps_per_epoch / total)

    assert snaps.lrs[7] == pytest.approx(expected(7, 1.0))  # epoch 7 ran at full LR, reduced after its eval
    assert snaps.lrs[8] == pytest.approx(expected(8, 0.5))
    assert snaps.lrs[11] == pytest.approx(expected(11, 0.5))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected(11, 0.25))
    assert all(g["lr"] == trainer.optimizer.param_groups[0]["lr"] for g in trainer.optimizer.param_groups)

    # θ* is epoch 9's weights (saved there, restored at the end), not epoch 11's.
    assert callback.theta.epoch == 9 and callback.theta.origin == "best"
    final = trainer.model.state_dict()
    assert all(torch.equal(final[k], snaps.weights[9][k]) for k in final)
    assert not all(torch.equal(final[k], snaps.weights[11][k]) for k in final)

    # What is saved is θ*.
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "saved").state_dict()
    assert all(torch.equal(reloaded[k], snaps.weights[9][k]) for k in reloaded)


def test_running_and_full_train_accuracy_agree_when_weights_do_not_move(tmp_path):
    # lr=0 and a model without dropout: the running count over the epoch's batches must equal an eval pass.
    results = {}
    for mode in ("running", "full"):
        trainer = None  # as build_trainer wires it: the pass is called once the Trainer trains

        def evaluate_train():
            m = trainer.predict(tiny_data(), metric_key_prefix="train").metrics
            return m["train_loss"], m["train_accuracy"]

        callback = AdaptiveLRCallback(AdaptiveSchedule(), mode, evaluate_train=evaluate_train if mode == "full" else None)
        trainer = trainer_for(callback, tmp_path / mode, epochs=2, lr=0.0)
        trainer.train()
        results[mode] = [(h["train_accuracy"], h["train_loss"]) for h in callback.history]
    assert [a for a, _ in results["running"]] == [a for a, _ in results["full"]]
    assert [loss for _, loss in results["running"]] == pytest.approx([loss for _, loss in results["full"]], rel=1e-5)
    assert all(round(a * 16) == a * 16 for a, _ in results["running"])  # counts over the 16 training images


def test_no_schedule_records_history_and_never_touches_lr(tmp_path):
    callback = AdaptiveLRCallback(None)
    trainer = trainer_for(callback, tmp_path, epochs=3, scheduler="constant")
    trainer.train()
    assert len(callback.history) == 3 and "reduced" not in callback.history[0]
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2 and callback.theta.weights is None
    assert callback.theta.epoch is None and callback.theta.origin == "last"


def test_test_set_evaluation_after_training_is_not_an_epoch(tmp_path):
    callback = AdaptiveLRCallback(AdaptiveSchedule())
    trainer = trainer_for(callback, tmp_path, epochs=1)
    trainer.train()
    trainer.evaluate(tiny_data(8, seed=2))  # eval_loss again, but training is over
    assert len(callback.history) == 1


def test_schedule_decisions_reach_the_trainers_logs(tmp_path):
    trainer = None  # as hf_medtl.training.trainer.build_trainer wires it, so report_to trackers see them
    callback = AdaptiveLRCallback(TraceSchedule(), log=lambda values: trainer.log(values))
    trainer = trainer_for(callback, tmp_path, 20)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "schedule/lr_scale" in h]
    assert len(logged) == 11
    assert [h["schedule/lr_scale"] for h in logged][6:9] == [0.5, 0.5, 0.5]  # halved after epoch 7
    assert logged[-1]["schedule/reductions"] == 2 and sum(h["schedule/save_best"] for h in logged) >= 1


def test_counting_a_training_batch_reads_no_value_back_from_the_device():
    """The running accuracy adds no per-step host-device synchronisation: count() runs on the meta device,
    where any read of a value (.item(), bool(), .tolist(), a copy to the host) raises."""
    running = RunningAccuracy()
    for _ in range(3):
        running.count(torch.empty(8, 4, device="meta"), torch.empty(8, dtype=torch.long, device="meta"))
    assert running.sums.device.type == "meta" and running.sums.shape == (3,)
    with pytest.raises(Exception):
        running.sums.tolist()  # what the epoch end does, once


@pytest.mark.parametrize("rule", ["val_loss", "val_accuracy", "last"])
def test_theta_star_rules_restore_the_epoch_they_name(tmp_path, rule):
    # The schedule runs (never reaching T on this task would keep Algorithm 1's saves rare); θ* follows the rule.
    callback, snaps = AdaptiveLRCallback(AdaptiveSchedule(threshold=1.0), theta=ThetaStar(rule)), Snapshots()
    trainer = trainer_for(callback, tmp_path, epochs=5, extra=[snaps])
    trainer.train()
    h = callback.history
    expected = {"val_loss": min(h, key=lambda r: r["val_loss"])["epoch"],
                "val_accuracy": min(h, key=lambda r: (-r["val_accuracy"], r["val_loss"]))["epoch"],
                "last": 5}[rule]
    assert callback.theta.epoch == expected and callback.theta.origin == ("last" if rule == "last" else "best")
    assert [r["epoch"] for r in h if r["save_best"]][-1] == expected
    final = trainer.model.state_dict()
    assert all(torch.equal(final[k], snaps.weights[expected][k]) for k in final)


def test_theta_star_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="theta_star"):
        ThetaStar("best")
