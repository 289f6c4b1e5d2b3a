"""cv as independent jobs: `hf-medtl cv RECIPE --fold K --seed S` in separate processes side by side, then --collect,
give what one `hf-medtl cv` process gives; a killed job is named by --collect and its rerun trains only it; --plan
lists exactly the jobs; bad input is one line."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from hf_medtl.cli import main
from tests.conftest import REPO, errors, make_image_folder, tiny_recipe

FAST = ["--num_train_epochs", "1", "--n_bootstrap", "20", "--test_ratio", "0.25"]


def _job(recipe, out, fold, *more):
    """A fold job as its own process (`python -m hf_medtl.cli` = `hf-medtl`), started, not waited for."""
    cmd = [sys.executable, "-m", "hf_medtl.cli", "cv", str(recipe), "--folds", "3", "--fold", str(fold), "--seed", "1",
           *FAST, "--output_dir", str(out), *more]
    return subprocess.Popen(cmd, cwd=out.parent, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_vit):
    """A 3-fold study with an ensemble, run by one `hf-medtl cv` process."""
    root = tmp_path_factory.mktemp("cv_jobs")
    images = make_image_folder(root / "images", per_class=(10, 10, 10))
    recipe = tiny_recipe(root, tiny_vit, images)
    a = root / "one_process"
    assert main(["cv", str(recipe), "--folds", "3", *FAST, "--ensemble", "--output_dir", str(a)]) == 0
    return recipe, a


def _probabilities(path):
    with open(path) as f:
        return {r["path"]: [float(v) for k, v in r.items() if k.startswith("p_")] for r in csv.DictReader(f)}


def _flat(x, prefix=""):
    """Nested dicts / lists of numbers as {path: number}, for comparisons with a tolerance."""
    if isinstance(x, dict):
        return {k: v for key, value in x.items() for k, v in _flat(value, f"{prefix}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, value in enumerate(x) for k, v in _flat(value, f"{prefix}/{i}").items()}
    return {prefix: x}


@pytest.mark.slow
def test_fold_jobs_side_by_side_then_collect_equal_one_process(one_process):
    """The done-when test: 3 fold jobs as 3 concurrent processes, then --collect (about 40 s on 2 cores)."""
    recipe, a = one_process
    b = a.parent / "jobs"
    jobs = [_job(recipe, b, k) for k in range(3)]
    for p in jobs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    assert main(["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(b), "--collect", "--ensemble"]) == 0
    one, jobs = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert [(r["seed"], r["fold"]) for r in jobs["runs"]] == [(1, 0), (1, 1), (1, 2)]
    assert [r["dir"] for r in jobs["runs"]] == [str(b / f"fold-{k}") for k in range(3)]
    for key in ("test", "test_ci", "validation", "epochs_run"):  # per-run test metrics, from separate processes
        assert _flat([r[key] for r in jobs["runs"]]) == pytest.approx(_flat([r[key] for r in one["runs"]]), abs=1e-9)
    assert _flat(jobs["test"]) == pytest.approx(_flat(one["test"]))
    assert _flat(jobs["out_of_fold"]) == pytest.approx(_flat(one["out_of_fold"]))
    e1, e2 = one["ensemble"], jobs["ensemble"]
    assert _flat(e2["test"]) == pytest.approx(_flat(e1["test"])) and _flat(e2["test_ci"]) == pytest.approx(_flat(e1["test_ci"]))
    assert _flat(e2["gain_over_best_member"]) == pytest.approx(_flat(e1["gain_over_best_member"]))  # paired bootstrap
    assert e2["best_member"] == e1["best_member"] and e2["dir"] == str(b / "ensemble")
    pa, pb = (_probabilities(d / "ensemble" / "predictions_test.csv") for d in (a, b))
    assert pa.keys() == pb.keys() and len(pa) > 0
    for path in pa:
        assert pb[path] == pytest.approx(pa[path], abs=1e-6)
    oof = [(d / "predictions_out_of_fold_seed-1.csv").read_text() for d in (a, b)]
    assert len(oof[0].splitlines()) > 1
    assert _flat(_probabilities(b / "predictions_out_of_fold_seed-1.csv")) == pytest.approx(
        _flat(_probabilities(a / "predictions_out_of_fold_seed-1.csv")), abs=1e-6)
    assert (b / "plots" / "folds.png").is_file() and "Ensemble of the 3 models" in (b / "report.md").read_text()
    assert not any(p.name.startswith(".staging") for p in b.iterdir()) and not (b / ".hf_medtl.lock").exists()


def test_collect_rewrites_the_one_process_summary(one_process, hf_medtl_log):
    recipe, a = one_process
    before = json.loads((a / "summary.json").read_text())
    stamps = [(a / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(3)]
    (a / "summary.json").unlink()
    assert main(["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(a), "--collect", "--ensemble"]) == 0
    after = json.loads((a / "summary.json").read_text())
    assert _flat(after) == pytest.approx(_flat(before), abs=1e-12)
    assert [(a / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(3)] == stamps  # nothing trained
    assert "running (" not in hf_medtl_log.text
    mount = a.parent / "another_mount"  # the study folder as another node may see it
    mount.symlink_to(a)
    assert main(["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(mount), "--collect"]) == 0
    assert [(a / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(3)] == stamps


def test_killed_job_is_named_by_collect_and_its_rerun_trains_only_it(one_process, capsys):
    recipe, b = one_process
    collect = ["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(b), "--collect"]
    before = json.loads((b / "fold-2" / "metrics.json").read_text())
    stamps = [(b / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in (0, 1)]
    summary = (b / "summary.json").read_text()
    import shutil

    shutil.rmtree(b / "fold-2")
    assert main(collect) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "1 of 3 run(s) not finished: seed 1 fold 2" in lines[0] and "missing" in lines[0]
    assert (b / "summary.json").read_text() == summary  # the old summary stays whole

    p = _job(recipe, b, 2)
    lock = b / "fold-2" / ".hf_medtl.lock"
    deadline = time.monotonic() + 300
    while not lock.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)  # killed in the middle of its run
    p.communicate()
    assert not (b / "fold-2" / "metrics.json").exists()
    assert main(collect) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "seed 1 fold 2" in lines[0] and "started but not finished" in lines[0]

    # Rerun: only fold 2 trains (resume 'last' starts it afresh: the killed run left no complete checkpoint).
    assert main(["cv", str(recipe), "--folds", "3", "--fold", "2", *FAST, "--output_dir", str(b),
                 "--resume_from_checkpoint", "last"]) == 0
    assert "seed 1 fold 2: test accuracy" in capsys.readouterr().out
    assert [(b / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in (0, 1)] == stamps
    again = json.loads((b / "fold-2" / "metrics.json").read_text())
    assert _flat(again["test"]) == pytest.approx(_flat(before["test"]))  # the same run as before it was killed
    assert main([*collect, "--ensemble"]) == 0
    assert _flat(json.loads((b / "summary.json").read_text())["test"]) == pytest.approx(_flat(json.loads(summary)["test"]))


def test_plan_lists_each_job_its_folder_and_what_collect_reads(one_process, capsys):
    recipe, b = one_process
    base = ["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(b)]
    assert main([*base, "--plan", "--ensemble"]) == 0
    lines = capsys.readouterr().out.splitlines()
    jobs, notes = lines[:3], lines[3:]
    for k, line in enumerate(jobs):
        command, folder = line.split("  # -> ")
        argv = shlex.split(command)
        assert argv[:2] == ["hf-medtl", "cv"] and argv[-4:] == ["--fold", str(k), "--seed", "1"]
        assert folder == str(b / f"fold-{k}")
    assert notes[1].startswith("# hf-medtl cv ") and notes[1].endswith("--collect --ensemble")
    assert all(str(b / f"fold-{k}" / "metrics.json") in notes[2] for k in range(3))
    stamp = (b / "fold-0" / "metrics.json").stat().st_mtime_ns
    assert main(shlex.split(jobs[0].split("  #")[0])[1:]) == 0  # the plan's command is the study's job: reused
    assert (b / "fold-0" / "metrics.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    # seeds: one line per (seed, fold), seed-S folders, seeds counted from the recipe's
    assert main(["cv", str(recipe), "--folds", "2", "--seeds", "2", "--plan", "--output_dir", str(b / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()[:4]
    assert [line.split("# -> ")[1] for line in lines] == [str(b / "s" / f"seed-{s}" / f"fold-{k}")
                                                          for s in (1, 2) for k in (0, 1)]
    assert [shlex.split(line.split("  #")[0])[-3:] for line in lines] == [
        [str(k), "--seed", str(s)] for s in (1, 2) for k in (0, 1)]


def test_bad_job_input_is_one_line(one_process, capsys):
    recipe, b = one_process
    base = ["cv", str(recipe), "--folds", "3", *FAST, "--output_dir", str(b)]
    cases = [([*base, "--fold", "3"], "--fold 3: this study has 3 fold(s), numbered 0 to 2"),
             ([*base, "--seeds", "2", "--fold", "0", "--seed", "7"], "--seed 7: this study's seeds are 1 to 2"),
             ([*base, "--collect", "--learning_rate", "0.5"], "holds a finished run of another recipe (learning_rate"),
             ([*base, "--collect", "--folds", "4"], "holds a finished run of another recipe (cv_folds"),
             ([*base, "--seeds", "2", "--seed", "5", "--plan"], "set the first seed as 'seed' in the recipe")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        lines = errors(capsys)
        assert len(lines) == 1 and message in lines[0], (argv, lines)
    with pytest.raises(SystemExit) as e:  # one mode at a time
        main([*base, "--fold", "0", "--collect"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fold_job_under_accelerate_launch_on_two_processes(one_process, tmp_path):
    """One job on several devices: `accelerate launch ... -m hf_medtl.cli cv RECIPE --fold K --seed S` (two CPU
    ranks over gloo here; GPUs the same way): the run trains once across the ranks, one result line, no lock left."""
    import shutil

    from tests.conftest import free_port, run_cmd

    recipe, _ = one_process
    out = tmp_path / "launched"
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    proc = run_cmd([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                    "-m", "hf_medtl.cli", "cv", str(recipe), "--folds", "3", "--fold", "1", "--seed", "1", *FAST,
                    "--use_cpu", "true", "--output_dir", str(out)])
    assert proc.stdout.count("seed 1 fold 1: test accuracy") == 1, proc.stdout
    m = json.loads((out / "fold-1" / "metrics.json").read_text())
    assert m["split_counts"]["validation"] > 0 and not (out / "fold-1" / ".hf_medtl.lock").exists()
    assert not (out / "summary.json").exists()  # a job writes its run only


@pytest.mark.slow
def test_ensemble_members_as_jobs_then_the_ensemble_reuses_them(tmp_path, tiny_vit, hf_medtl_log):
    """`ensemble_seeds: N` members as independent jobs: member S is the plain finetune run of the recipe with
    ensemble_seeds 1, seed S, the split seed and output_dir/members/seed-S (docs/cluster.md); the ensemble's own
    run then reuses every member and saves what one process saves (probabilities to 1e-6)."""
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    recipe = tiny_recipe(tmp_path, tiny_vit, images, ensemble_seeds=2, n_bootstrap=20, num_train_epochs=1)
    one, jobs = tmp_path / "one", tmp_path / "jobs"
    assert main(["finetune", str(recipe), "--output_dir", str(one)]) == 0
    for seed in (1, 2):
        assert main(["finetune", str(recipe), "--ensemble_seeds", "1", "--seed", str(seed), "--split_seed", "1",
                     "--output_dir", str(jobs / "members" / f"seed-{seed}"), "--push_to_hub", "false"]) == 0
    stamps = [(jobs / "members" / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (1, 2)]
    hf_medtl_log.clear()
    assert main(["finetune", str(recipe), "--output_dir", str(jobs)]) == 0
    for s in (1, 2):
        assert f"members/seed-{s}: finished earlier (metrics.json there); not rerun" in hf_medtl_log.text
    assert [(jobs / "members" / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (1, 2)] == stamps
    pa, pb = (_probabilities(d / "predictions_test.csv") for d in (one, jobs))
    assert pa.keys() == pb.keys() and len(pa) > 0
    assert _flat(pb) == pytest.approx(_flat(pa), abs=1e-6)
    ea, eb = (json.loads((d / "metrics.json").read_text())["ensemble"] for d in (one, jobs))
    assert _flat([m["test"] for m in eb["members"]]) == pytest.approx(_flat([m["test"] for m in ea["members"]]))
    assert _flat(eb["gain_over_best_member"]) == pytest.approx(_flat(ea["gain_over_best_member"]))
