"""`hf-medtl study search --storage URL` with several workers on one study: distinct trials, exactly the requested
number in total, one best trial; a dead worker's trial marked failed and run again; bad storage in one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hf_medtl.cli import main
from tests.conftest import REPO, errors, make_image_folder, tiny_recipe

SPACE = {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "threshold": {"choices": [0.5, 0.9]}}


@pytest.fixture
def search_recipe(tmp_path, tiny_vit):
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    return tiny_recipe(tmp_path, tiny_vit, images, output_dir=str(tmp_path / "search"), search_space=SPACE,
                       num_train_epochs=2)


def _worker(recipe, *args):
    cmd = [sys.executable, "-m", "hf_medtl.cli", "study", "search", str(recipe), *args]
    return subprocess.Popen(cmd, cwd=recipe.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _study(storage: str, name: str = "hf_medtl_search"):
    import optuna

    if "://" not in storage:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    return optuna.load_study(study_name=name, storage=storage)


def _states(study) -> dict:
    out = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(search_recipe, tmp_path, kind):
    out = tmp_path / "search"
    storage = f"sqlite:///{tmp_path / 'search.db'}" if kind == "sqlite" else str(out / "optuna_journal.log")
    extra = ["--storage", storage] if kind == "sqlite" else []  # the journal: the default, in the study folder
    workers = [_worker(search_recipe, "--trials", "4", "--num_train_epochs", "1", *extra) for _ in range(2)]
    logs = []
    for w in workers:
        stdout, stderr = w.communicate(timeout=600)
        assert w.returncode == 0, stderr[-3000:]
        logs.append(stdout)
    study = _study(storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({t.number for t in study.trials}) == len(study.trials)
    assert set(_states(study)) <= {"COMPLETE", "PRUNED"}  # a worker that found the study full gave way
    pids = {t.user_attrs["hf_medtl_worker"]["pid"] for t in complete}
    assert pids <= {w.pid for w in workers}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["best_trial"] == study.best_trial.number
    assert summary["best_value"] == max(t.value for t in complete) and summary["storage"] == storage
    assert sum("4 trials; best validation accuracy" in log for log in logs) >= 1, logs
    assert not any(p.name.startswith(".staging") for p in out.iterdir()) and not (out / ".hf_medtl.lock").exists()


@pytest.mark.slow
def test_a_dead_workers_trial_is_failed_and_run_again(search_recipe, tmp_path, capsys):
    out = tmp_path / "search"
    journal = out / "optuna_journal.log"
    w = _worker(search_recipe, "--trials", "2", "--num_train_epochs", "50")  # slow enough to be killed mid-trial
    deadline = time.monotonic() + 300
    running = []
    while not running and w.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if journal.is_file():
            try:
                running = [t for t in _study(str(journal)).trials if t.state.name == "RUNNING"]
            except KeyError:  # the study is not created yet
                pass
    w.send_signal(signal.SIGKILL)
    w.communicate()
    assert running and _states(_study(str(journal))) == {"RUNNING": 1}  # left running by the dead worker
    assert main(["study", "search", str(search_recipe), "--trials", "2", "--num_train_epochs", "50"]) == 0, \
        capsys.readouterr().err[-2000:]
    study = _study(str(journal))
    assert _states(study) == {"FAIL": 1, "COMPLETE": 2} and study.trials[0].state.name == "FAIL"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["trials"], summary["failed"]) == (2, 1) and summary["best_trial"] in (1, 2)
    assert "2 trials; best validation accuracy" in capsys.readouterr().out


def test_bad_storage_and_other_recipe_are_one_line(search_recipe, tmp_path, capsys):
    cases = [(["--storage", "postgresql://me:s3cret@127.0.0.1:1/db"], "--storage 'postgresql://me:***@127.0.0.1:1/db': "
              "cannot open it"),
             (["--storage", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 's.db'}"], "cannot open it"),
             (["--storage", "nosuchdb://x"], "cannot open it")]
    for extra, message in cases:
        assert main(["study", "search", str(search_recipe), "--trials", "1", *extra]) == 2
        lines = errors(capsys)
        assert len(lines) == 1 and message in lines[0] and "s3cret" not in lines[0], lines
    assert not (tmp_path / "search" / "split_manifest.csv").exists()  # refused before the data was read
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["study", "search", str(search_recipe), "--trials", "1", "--num_train_epochs", "1", "--storage", db]) == 0
    capsys.readouterr()
    assert main(["study", "search", str(search_recipe), "--trials", "2", "--storage", db, "--learning_rate", "0.5"]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "study 'hf_medtl_search' holds trials of another recipe" in lines[0], lines
    assert main(["study", "search", str(search_recipe), "--trials", "1", "--num_train_epochs", "1", "--storage", db,
                 "--study_name", "second"]) == 0  # another name in the same database: another study
    assert len(_study(db, "second").trials) == 1 and len(_study(db).trials) == 1


def test_a_trial_started_past_the_total_gives_way_and_a_dead_workers_trial_fails(tmp_path):
    """The two rules behind the workers' exact total, on an Optuna study without training: a trial that starts when
    the finished trials and those started before it already make the total is pruned; a running trial whose worker
    (this host, a PID that is gone) died is marked failed, one whose worker lives is left alone."""
    import optuna

    from hf_medtl.studies.search_trials import WORKER_ATTR, fail_dead, trial_claimer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    claim = trial_claimer(3)
    for value in (0.5, 0.6):
        t = study.ask()
        claim(t)
        study.tell(t, value)
    first, second = study.ask(), study.ask()  # two workers start "the last" trial together
    claim(first)
    with pytest.raises(optuna.TrialPruned, match="already has its 3 trials"):
        claim(second)
    study.tell(second, state=optuna.trial.TrialState.PRUNED)  # as Optuna's loop records it
    claim(first)  # a trial's second suggest (model_init) is not counted again

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    first.set_user_attr(WORKER_ATTR, {"pid": dead.pid, "host": socket.gethostname()})
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, {"pid": os.getppid(), "host": socket.gethostname()})
    fail_dead(study, storage, tmp_path)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "PRUNED", 4: "RUNNING"}
