"""Issue 35, item 4: the EMA of the weights (ema_decay) is in every checkpoint. A run killed with SIGKILL after
its first checkpoint and resumed through `hf-medtl finetune --resume_from_checkpoint last` goes on averaging
where it stopped, so the saved model (the EMA, θ*) is the uninterrupted run's, bit for bit (CPU, fixed seed)."""
import json
import signal

import pytest

from hf_medtl.cli import main
from tests.conftest import tiny_recipe
from tests.training.test_resume import RESULT_KEYS, launch_and_kill_after_first_checkpoint


@pytest.mark.slow
def test_kill_and_resume_with_ema_saves_the_uninterrupted_model(tmp_path, image_folder, tiny_timm):
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=2, image_size=32, save_strategy="epoch",
                         adaptive_lr=False, learning_rate=1e-2, ema_decay=0.8, theta_star="val_loss", n_bootstrap=0)
    assert main(["finetune", str(recipe), "--output_dir", str(tmp_path / "straight")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    # The saved model is the EMA after epoch 2 (θ*: it wins), which averaged across the point where the run is killed.
    assert straight["best_epoch"] == 2 and history[1].get("ema_best") is True, history
    assert straight["best_source"] == "ema"

    killed = tmp_path / "run"
    assert launch_and_kill_after_first_checkpoint(recipe, killed) == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()
    first = sorted(killed.glob("checkpoint-*/adaptive_schedule.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    assert first and (first[0].parent / "ema.safetensors").is_file()
    assert json.loads(first[-1].read_text())["history"][-1]["epoch"] < 2  # killed before the last epoch's checkpoint

    assert main(["finetune", str(recipe), "--resume_from_checkpoint", "last"]) == 0
    resumed = json.loads((killed / "metrics.json").read_text())
    for key in RESULT_KEYS:
        assert resumed[key] == straight[key], key
    assert json.loads((killed / "history.json").read_text()) == history  # incl. each epoch's ema_val_loss
    [a], [b] = killed.glob("checkpoint-*/ema.safetensors"), (tmp_path / "straight").glob("checkpoint-*/ema.safetensors")
    assert a.read_bytes() == b.read_bytes()
    assert (killed / "model.safetensors").read_bytes() == (tmp_path / "straight" / "model.safetensors").read_bytes()
