"""A run killed with SIGKILL mid-training and resumed ends exactly as an uninterrupted one (CPU, fixed seed),
and a killed run never leaves outputs that look complete."""
import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest

from hf_medtl.finetune import main, run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import REPO
from tests.conftest import errors, tiny_recipe

# (best_source: θ*'s source is in every checkpoint, so that a resumed run names what the uninterrupted one does)
RESULT_KEYS = ("epochs_run", "lr_reductions", "best_epoch", "best_source", "train_accuracy", "validation", "test",
               "split_counts")


def launch_and_kill_after_first_checkpoint(recipe, output_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hf_medtl.finetune", str(recipe)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(output_dir.glob("checkpoint-*/adaptive_schedule.json")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    return proc.returncode


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path, image_folder, tiny_timm, hf_medtl_log):
    # swa_epochs 5: the average includes epoch 1, trained before the kill, so its window must survive the resume
    # (every checkpoint kept: the first one's SWA window is checked below)
    common = dict(num_train_epochs=5, image_size=32, save_strategy="epoch", save_total_limit=None, threshold=0.6,
                  patience=1, stop_patience=3, learning_rate=1e-2, swa_epochs=5)
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, **common)
    straight = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "straight")]))

    killed = tmp_path / "run"
    assert launch_and_kill_after_first_checkpoint(recipe, killed) == -signal.SIGKILL
    assert not (killed / "metrics.json").exists() and not (killed / "model.safetensors").exists()
    done = sorted(int(p.parent.name.split("-")[1]) for p in killed.glob("checkpoint-*/adaptive_schedule.json"))
    assert done and done[-1] < 5 * 4  # killed before the last epoch's checkpoint (4 steps per epoch)

    hf_medtl_log.clear()
    resumed = run(load_recipe(recipe, ["--resume_from_checkpoint", "last"]))
    err = hf_medtl_log.text
    trained_again = len({m for m in hf_medtl_log.messages if re.match(r" +\d+ \| ", m)})
    assert trained_again == resumed["epochs_run"] - done[-1] // 4  # only the epochs after the checkpoint ran
    assert "reusing the split" in err
    for key in (*RESULT_KEYS, "swa"):
        assert resumed[key] == straight[key], key
    assert resumed["swa"]["epochs"][0] == 1 and (killed / f"checkpoint-{done[0]}" / "swa_window.safetensors").is_file()
    history = json.loads((killed / "history.json").read_text())
    assert history == json.loads((tmp_path / "straight" / "history.json").read_text())


def test_resume_without_checkpoint_is_clear(tmp_path, image_folder, tiny_vit, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, resume_from_checkpoint="last")
    assert main([str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "no complete checkpoint" in err[0] and "save_strategy 'epoch'" in err[0]


def test_outputs_are_committed_with_the_marker_last(tmp_path):
    from hf_medtl import outputs

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    stage = outputs.staging_dir(out)
    (stage / "plots").mkdir()
    for name in ("model.safetensors", "plots/a.png", "metrics.json"):
        (stage / name).write_text("new " + name)
    moved = []
    real_replace = os.replace
    try:
        def spy(src, dst):
            moved.append((os.path.basename(dst), (out / "metrics.json").exists()))
            real_replace(src, dst)
        os.replace = spy
        outputs.commit(stage, out)
    finally:
        os.replace = real_replace
    assert moved[-1][0] == "metrics.json"
    assert all(not marker_present for _, marker_present in moved)  # the old marker went first
    assert (out / "metrics.json").read_text() == "new metrics.json" and not stage.exists()


@pytest.mark.slow
def test_ctrl_c_saves_the_epoch_and_the_printed_command_resumes_it(tmp_path, image_folder, tiny_timm):
    """The default save_strategy ("no"): SIGINT during training finishes the epoch, saves it (one checkpoint kept),
    exits 130 with the resume command; that command prints what it resumed from and ends as an uninterrupted run."""
    import shlex

    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=6, image_size=32, threshold=0.6,
                         patience=1, stop_patience=5, learning_rate=1e-2)
    straight = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "straight")]))
    assert straight["epochs_run"] == 6

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hf_medtl.finetune", str(recipe)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # the epoch rows come on stderr: interrupt once epoch 2's has appeared
        lines.append(line)
        if re.search(r"\] +2 \| ", line):
            proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130, "".join(lines)[-3000:]
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "adaptive_schedule.json").is_file()
    epoch = json.loads((checkpoints[0] / "adaptive_schedule.json").read_text())["history"][-1]["epoch"]
    assert 2 <= epoch < 6
    last = lines[-1].strip()
    assert last.startswith(f"error: interrupted: epoch {epoch} finished and saved in {checkpoints[0]}; resume with: ")
    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command[:2] == ["hf-medtl", "finetune"] and command[-2:] == ["--resume_from_checkpoint", "last"]

    resumed = subprocess.run([sys.executable, "-m", "hf_medtl.cli", *command[1:]], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoints[0]}: {epoch} epoch(s) done, learning rate" in resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in RESULT_KEYS:
        assert metrics[key] == straight[key], key


def test_resume_refuses_a_checkpoint_another_recipe_wrote(tmp_path, image_folder, tiny_timm, capsys):
    """A finished run on another learning rate in output_dir: `--resume_from_checkpoint last` with this recipe
    would train 0 epochs and save that run's weights as this one's. One line naming the difference, exit 2,
    before the data check; nothing of the old run changes. The same recipe resumes (here: its last epoch)."""
    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=1, image_size=32, save_strategy="epoch",
                         n_bootstrap=0)
    assert main([str(recipe)]) == 0
    out = tmp_path / "run"
    [checkpoint] = out.glob("checkpoint-*")
    assert json.loads((checkpoint / "recipe.json").read_text())["learning_rate"] == 3e-3
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main([str(recipe), "--learning_rate", "0.3", "--resume_from_checkpoint", "last"]) == 2
    [line] = errors(capsys)
    assert line == (f"error: resume_from_checkpoint: {checkpoint} was written by another recipe (learning_rate: 0.003 "
                    "there, 0.3 now); resume with that recipe, or start afresh (resume_from_checkpoint false, or "
                    "another output_dir)")
    assert (out / "metrics.json").read_bytes() == before
    assert main([str(recipe), "--resume_from_checkpoint", "last"]) == 0
