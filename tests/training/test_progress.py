"""Progress while it trains: a bar per epoch on the main process (none with disable_tqdm), each epoch row with its
wall time and an ETA; predict's messages written above its bar, never into it."""
import re
from types import SimpleNamespace

import pytest

from hf_medtl.cli import main
from hf_medtl.console import EPOCH_HEADER, duration, epoch_row
from hf_medtl.training.progress import EpochClock, EpochProgressBar
from tests.conftest import make_image_folder, tiny_recipe

TIME = r"\d+\.\d+s|\d+m\d\ds|\d+h\d\dm"
ROW = re.compile(rf"\[hf_medtl\] +(\d+) \| .+ \| +({TIME}) \| +(≤(?:{TIME})|-) \| ")


def _rows(err: str) -> list[tuple[str, str, str]]:
    return [m.groups() for m in ROW.finditer(err)]


def test_a_run_shows_a_bar_per_epoch_and_rows_with_time_and_eta(tmp_path, image_folder, tiny_vit, capfd):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=3, disable_tqdm=False, n_bootstrap=0,
                         adaptive_lr=False)
    assert main(["finetune", str(recipe)]) == 0
    err = capfd.readouterr().err
    steps = -(-30 // 8)  # 30 training images (36 less the 10% validation and test), batches of 8
    for epoch in (1, 2, 3):  # tqdm's frames, on stderr: desc, the step counter, the unit
        assert re.search(rf"epoch {epoch}/3: +\d+%\|.*\| \d/{steps} \[.*step", err), err[-2000:]
    assert "it/s]" not in err and "{'loss'" not in err  # never the Trainer's own bar or its log dicts
    assert "|   time |     ETA | decision" in err
    rows = _rows(err)
    assert [r[0] for r in rows] == ["1", "2", "3"], err[-2000:]
    assert rows[0][2].startswith("≤") and rows[1][2].startswith("≤") and rows[2][2] == "-"  # no epoch left after 3


def test_disable_tqdm_leaves_the_rows_alone(tmp_path, image_folder, tiny_vit, capfd):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, disable_tqdm=True, n_bootstrap=0)
    assert main(["finetune", str(recipe)]) == 0
    err = capfd.readouterr().err
    assert "epoch 1/" not in err and "step/s" not in err and "%|" not in err and "\r" not in err
    assert [r[0] for r in _rows(err)] == ["1", "2"]


def _state(**values):
    base = dict(is_world_process_zero=True, epoch=0.0, global_step=0, max_steps=8, num_train_epochs=2)
    return SimpleNamespace(**{**base, **values})


def test_the_bar_is_the_main_process_s_only_and_follows_the_steps(capfd):
    args = SimpleNamespace(gradient_accumulation_steps=1)
    other = EpochProgressBar()
    other.on_epoch_begin(args, _state(is_world_process_zero=False), None, train_dataloader=range(4))
    assert other.bar is None
    bar = EpochProgressBar()
    bar.on_epoch_begin(args, _state(epoch=1.0, global_step=5), None, train_dataloader=range(4))  # resumed mid-epoch
    assert bar.bar.total == 4 and bar.bar.n == 1 and bar.bar.desc.startswith("epoch 2/2")
    bar.on_step_end(args, _state(global_step=7), None)
    assert bar.bar.n == 3
    bar.on_epoch_end(args, _state(), None)
    assert bar.bar is None and "epoch 2/2" in capfd.readouterr().err
    accumulating = SimpleNamespace(gradient_accumulation_steps=3)
    bar.on_epoch_begin(accumulating, _state(), None, train_dataloader=range(7))
    assert bar.bar.total == 3  # 7 batches in steps of 3: the Trainer steps on the last partial one too
    bar.on_train_end(args, _state(), None)
    assert bar.bar is None


def test_the_clock_and_the_row():
    clock = EpochClock()
    clock.start()
    seconds, eta = clock.lap(epoch=2, num_epochs=10, stopping=False, device="cpu")
    assert 0 <= seconds < 5 and eta == pytest.approx(8 * seconds)
    assert clock.lap(epoch=10, num_epochs=10, stopping=False, device="cpu")[1] is None
    assert clock.lap(epoch=3, num_epochs=10, stopping=True, device="cpu")[1] is None
    assert [duration(s) for s in (0.041, 12.34, 245, 7800)] == ["0.04s", "12.3s", "4m05s", "2h10m"]
    record = {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.75,
              "lr": 1e-3, "monitor": "val_loss", "save_best": True}
    row = epoch_row(record, (65.0, 455.0))
    assert row.endswith("|  1m05s |  ≤7m35s | θ* saved")
    # Every column keeps its place under the header (the decision, free text, stays last).
    assert [i for i, c in enumerate(row) if c == "|"] == [i for i, c in enumerate(EPOCH_HEADER) if c == "|"]
    assert epoch_row(record).split(" | ")[7:9] == ["     -", "      -"]  # no clock: dashes, same widths


def test_predict_writes_its_messages_above_the_bar(tmp_path, tiny_vit, capfd):
    folder = make_image_folder(tmp_path / "images", per_class=(2, 1, 1))
    (folder / "benign" / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(tiny_vit), str(folder), "--format", "csv", "--batch_size", "2"]) == 0
    err = capfd.readouterr().err
    assert "predict:" in err  # the bar was open (a folder)
    lines = [seg for seg in re.split(r"[\r\n]", err) if "unreadable" in seg]
    assert lines and all(seg.startswith("[hf_medtl] ") for seg in lines), lines  # never glued to a bar frame
