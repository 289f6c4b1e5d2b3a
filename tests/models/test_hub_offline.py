"""A Hub id without the Hub: one line within seconds, before the data check, when the model is not in the HF cache;
a cached model still trains. HF_HUB_OFFLINE is unset and the Hub 'unreachable' (HF_ENDPOINT on a closed local
port: connections are refused at once). huggingface_hub reads these variables when it is imported, so the commands
run in a fresh interpreter, as a user's would."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_medtl.config.arguments import ModelArguments
from hf_medtl.models import ModelError, hub_source
from tests.conftest import REPO, write_recipe

UNREACHABLE = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3"}


def _finetune(recipe: Path, hf_home: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(UNREACHABLE, HF_HOME=str(hf_home), PYTHONPATH=str(REPO))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hf_medtl.cli", "finetune", str(recipe)], env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - start


def test_an_unreachable_hub_is_one_line_within_seconds_before_the_data_check(tmp_path, image_folder):
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="microsoft/resnet-50", data_dir=str(image_folder),
                          output_dir=str(tmp_path / "run"))
    proc, seconds = _finetune(recipe, tmp_path / "empty_hf_home")
    print(f"unreachable Hub: exit {proc.returncode} after {seconds:.1f} s (interpreter start included)")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert seconds < 60  # the retry storm it guards against (20 tries, 8 s apart) takes minutes; loose for busy cores
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "'microsoft/resnet-50'" in line and "the Hugging Face Hub cannot be reached" in line
    assert "127.0.0.1:9" in line and "HF_HUB_OFFLINE=1" in line and "hf download microsoft/resnet-50" in line
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "data_report.json").exists()  # the data check never ran
    assert "images;" not in proc.stderr  # nor did its summary line


def _into_hf_cache(model_dir: Path, hf_home: Path, repo_id: str) -> None:
    """``model_dir`` laid out as hf_hub_download leaves a download (snapshot + refs/main), files only."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_model_in_the_hf_cache_trains_with_the_hub_unreachable(tmp_path, image_folder, tiny_vit):
    _into_hf_cache(tiny_vit, tmp_path / "hf_home", "tiny-org/tiny-vit")
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="tiny-org/tiny-vit", data_dir=str(image_folder),
                          output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=8,
                          n_bootstrap=0, disable_tqdm=True)
    proc, seconds = _finetune(recipe, tmp_path / "hf_home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny-org/tiny-vit: the Hugging Face Hub cannot be reached" in proc.stderr
    assert "loading the copy in the HF cache" in proc.stderr and "Retrying" not in proc.stderr
    assert (tmp_path / "run" / "metrics.json").exists()
    assert seconds < 90  # each optional file the load asks for would otherwise be retried for ~25 s


def test_what_the_pre_flight_leaves_to_the_load(tmp_path, tiny_vit, monkeypatch):
    """Local folders, non-Hub names and offline mode (the tests' own setting) never touch the network."""
    monkeypatch.setattr(hub_source, "_hub_answer", lambda name: pytest.fail(f"asked the Hub about {name}"))
    for name in (str(tiny_vit), str(tmp_path / "absent"), "./x", "not a repo id!"):
        hub_source.check_available(ModelArguments(model_name_or_path=name))
    # Offline, a Hub id that is not in the cache cannot load: one line at once, still without asking the Hub.
    with pytest.raises(ModelError, match="'nobody/no-such-model': not in the Hugging Face cache, and HF_HUB_OFFLINE=1"):
        hub_source.check_available(ModelArguments(model_name_or_path="nobody/no-such-model"))


@pytest.mark.parametrize("answer,words", [
    (("unreachable", "http://hub: timed out"), "cannot be reached (http://hub: timed out)"),
    (("missing", ""), "no such model on the Hub"),
    (("gated", ""), "a gated model; accept its terms"),
])
def test_the_hubs_answers_are_one_line_each(monkeypatch, answer, words):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_source, "_hub_answer", lambda name: answer)
    with pytest.raises(ModelError, match="model_name_or_path 'org/model'") as e:
        hub_source.check_available(ModelArguments(model_name_or_path="org/model"))
    assert words in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(hub_source, "_hub_answer", lambda name: ("ok", ""))
    hub_source.check_available(ModelArguments(model_name_or_path="org/model"))
