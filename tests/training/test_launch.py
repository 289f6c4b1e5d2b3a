"""The three ways to launch, and a real 2-process CPU run (gloo) that must decide identically on both ranks."""
import json
import os
import re
import shutil
import sys

import pytest

from tests.conftest import launch_two_ranks, run_cmd, tiny_recipe

@pytest.mark.parametrize("launcher", ["python -m", "hf-medtl", "accelerate launch"])
def test_single_process_launchers(tmp_path, image_folder, tiny_vit, launcher):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1)
    bin_dir = os.path.dirname(sys.executable)
    cmd = {"python -m": [sys.executable, "-m", "hf_medtl.finetune", str(recipe)],
           "hf-medtl": [shutil.which("hf-medtl", path=bin_dir) or "hf-medtl", "finetune", str(recipe)],
           "accelerate launch": [shutil.which("accelerate", path=bin_dir) or "accelerate", "launch", "--num_processes", "1",
                                 "--cpu", "hf_medtl/finetune.py", str(recipe)]}[launcher]
    proc = run_cmd(cmd)
    assert "test accuracy" in proc.stdout
    # What a user reads: one header and one aligned row per epoch, no library noise.
    assert proc.stderr.count("epoch | train loss") == 1 and re.search(r"\[hf_medtl\] +1 \| ", proc.stderr)
    for noise in ("pin_memory", "LOAD REPORT", "MISMATCH", "Traceback", "{'loss'"):
        assert noise not in proc.stderr + proc.stdout, noise
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 1


@pytest.mark.slow
def test_two_process_cpu_launch_decides_identically_and_writes_once(tmp_path, image_folder, tiny_vit):
    # `accelerate launch --cpu --num_processes 2` silently runs one process; --multi_gpu with use_cpu gives two ranks.
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=4, use_cpu=True, threshold=0.5,
                         patience=1, per_device_train_batch_size=4)
    proc, by_rank = launch_two_ranks(recipe)
    assert by_rank["0"] and by_rank["0"] == by_rank["1"], proc.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == len(by_rank["0"])
    # The loss is summed over both ranks too: with 3 classes an untrained model is near ln 3, on both sides.
    assert abs(history[0]["train_loss"] - history[0]["val_loss"]) < 0.3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == len(history)
    assert proc.stdout.count("test accuracy") == 1  # both ranks finish; only rank 0 reports and writes
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        ["README.md", "config.json", "data_report.json", "history.json", "metrics.json", "model.safetensors",
         "plots", "predictions_test.csv", "predictions_test_no_tta.csv", "predictions_validation.csv",
         "predictions_validation_no_tta.csv", "preprocessor_config.json", "recipe.json", "report.json", "report.md", "split_manifest.csv",
         "training_args.bin"])
