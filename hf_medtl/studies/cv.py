"""`hf-medtl cv RECIPE --folds K --seeds N`: grouped, stratified K-fold cross-validation on the non-test pool,
repeated with seeds seed..seed+N-1; each fold a normal run in ``output_dir/[seed-S/]fold-i`` scored on the one
shared test split. Writes the mean ± sd and range of every headline metric, the per-fold CIs, the pooled
out-of-fold predictions scored once per seed, and a fold-by-fold plot. Multi-label data works the same way (folds
stratified by finding set, per-finding scores, out-of-fold predictions in the multi-label form). A rerun reuses
a fold that finished on the same recipe and data, and reruns one that finished on other data
(hf_medtl.studies.runs.run_variant). The runs can also be independent jobs (docs/cluster.md): ``run_job`` trains
one of them into the same folder, ``collect`` pools the finished ones into the same summary and ensemble, and
``plan_text`` lists the jobs; all three and ``run_cv`` share one plan of the study (``plan_study``)."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_medtl import outputs
from hf_medtl.config.commands import CvOptions
from hf_medtl.data.split import split_seed
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.plots import pyplot, save_figure
from hf_medtl.evaluation.scoring import fmt
from hf_medtl.studies.crossval import FoldRun, fold_runs, headline, score_out_of_fold, spread
from hf_medtl.studies.reuse import finished
from hf_medtl.studies.runs import SUMMARY, begin, finish, run_variant, study_lock


@dataclass(frozen=True)
class Study:
    base: object  # the recipe with the command's overrides
    out: Path
    folds: int
    seeds: int
    split_seed: int
    jobs: tuple[FoldRun, ...]


def plan_study(recipe_path: str | Path, argv: list[str], folds: int, seeds: int) -> Study:
    """Every run of ``hf-medtl cv RECIPE --folds K --seeds N`` (seeds seed..seed+N-1, folds 0..K-1), each with its
    folder ``output_dir/[seed-S/]fold-i`` (``run`` for --folds 1) and overrides: one test split for every run (the
    split seed), the fold and the fold seed. The one-process cv, each --fold job and --collect all use this."""
    from hf_medtl.config.recipe import load_recipe

    base = load_recipe(recipe_path, argv)
    return Study(base, Path(base.training.output_dir), folds, seeds, split_seed(base.data, base.training.seed),
                 fold_runs(base, folds, seeds))


def run_cv(recipe_path: str | Path, argv: list[str], folds: int = CvOptions.folds, seeds: int = CvOptions.seeds,
           ensemble: bool = False) -> dict:
    """Every run in this process, one after another, then the summary. ``ensemble``: also save the runs' models as
    ONE model averaging them in output_dir/ensemble, scored on the shared test split (hf_medtl/studies/ensemble.py).
    The study folder is this process's for the whole study (its lock), each run's folder is its run's."""
    study = plan_study(recipe_path, argv, folds, seeds)
    _check_ensemble(study, ensemble)
    main = study.base.training.process_index == 0
    with study_lock(study.out, take=main):
        staging = begin(study.out) if main else None
        done = [(job, run_variant(recipe_path, argv, list(job.extra), job.dir)) for job in study.jobs]
        return _summarize(recipe_path, study, done, staging, ensemble)


def run_job(recipe_path: str | Path, argv: list[str], folds: int, seeds: int, fold: int, seed: int | None) -> tuple:
    """``hf-medtl cv RECIPE --fold K --seed S``: exactly that run of the study, into the folder the one-process cv
    gives it (reused when it finished there, resumed with resume_from_checkpoint 'last'). It writes nothing else,
    so it takes no lock but its run's: jobs of one study run side by side. -> (job, metrics, main process?)."""
    if seed is not None and seeds == 1:  # one seed: it is the study's, as --seed S is for the one-process cv
        argv = [*argv, "--seed", str(seed)]
    study = plan_study(recipe_path, argv, folds, seeds)
    first, n = study.base.training.seed, len(study.jobs) // seeds
    if not (0 <= fold < folds):
        raise HfMedtlError(f"--fold {fold}: this study has {folds} fold(s), numbered 0 to {folds - 1}; pass one of "
                           f"those (or --folds N for another study)")
    seed = first if seed is None else seed
    if not first <= seed < first + seeds:
        raise HfMedtlError(f"--seed {seed}: this study's seeds are {first} to {first + seeds - 1} (the recipe's seed "
                           f"{first} and --seeds {seeds}); pass one of those, or set 'seed' in the recipe to start "
                           "the seeds elsewhere")
    job = study.jobs[(seed - first) * n + fold]
    return job, run_variant(recipe_path, argv, list(job.extra), job.dir), study.base.training.process_index == 0


def collect(recipe_path: str | Path, argv: list[str], folds: int = CvOptions.folds, seeds: int = CvOptions.seeds,
            ensemble: bool = False) -> dict:
    """``hf-medtl cv RECIPE --collect``: the finished runs of the study pooled into the summary (and ensemble) the
    one-process cv writes; nothing is trained. Every run missing, unfinished, still running or finished on other
    data is named in one line first; a run of another recipe in a run's folder is refused (reuse.finished)."""
    from hf_medtl.config.recipe import load_recipe

    study = plan_study(recipe_path, argv, folds, seeds)
    _check_ensemble(study, ensemble)
    main = study.base.training.process_index == 0
    with study_lock(study.out, take=main):
        done, missing = [], []
        for job in study.jobs:
            recipe = load_recipe(recipe_path, [*argv, *job.extra, "--output_dir", str(job.dir)])
            metrics = finished(recipe, job.dir)
            if metrics is None:
                missing.append(f"{job.name()} ({job.dir}: {_state(job.dir)})")
            done.append((job, metrics))
        if missing:
            raise HfMedtlError(f"cv --collect: {len(missing)} of {len(study.jobs)} run(s) not finished: "
                               f"{'; '.join(missing)}; run them (hf-medtl cv RECIPE ... --fold K --seed S, see "
                               "--plan), then --collect again")
        return _summarize(recipe_path, study, done, begin(study.out) if main else None, ensemble)


def plan_text(recipe_path: str | Path, argv: list[str], folds: int, seeds: int, ensemble: bool,
              seed: int | None = None) -> str:
    """``--plan``: one shell command per job, first to last (line i+1 is job i: a job array's task picks its line),
    each with its folder as a comment; then the --collect command and what it reads, as comments. ``seed``: the
    command's --seed (the study's first seed)."""
    from hf_medtl.config.recipe import load_recipe

    if seed is not None and seeds > 1 and seed != load_recipe(recipe_path, argv).training.seed:
        raise HfMedtlError(f"cv --plan: with --seeds {seeds}, set the first seed as 'seed' in the recipe (or as "
                           f"--seed in a one-process cv), not with --seed here: each job's --seed names its own run")
    study = plan_study(recipe_path, [*argv, *(["--seed", str(seed)] if seed is not None else [])], folds, seeds)
    _check_ensemble(study, ensemble)
    common = ["hf-medtl", "cv", str(recipe_path), "--folds", str(folds), "--seeds", str(seeds), *argv]
    lines = [f"{shlex.join([*common, '--fold', str(j.fold or 0), '--seed', str(j.seed)])}  # -> {j.dir}"
             for j in study.jobs]
    first = ["--seed", str(seed)] if seed is not None and seeds == 1 else []
    collect_cmd = shlex.join([*common, *first, "--collect", *(["--ensemble"] if ensemble else [])])
    lines += [f"# {len(study.jobs)} job(s), each a plain command (prefix 'accelerate launch ... -m hf_medtl.cli' "
              "instead of 'hf-medtl' for several GPUs); once all have finished:",
              f"# {collect_cmd}",
              f"# --collect reads {', '.join(str(j.dir / outputs.MARKER) for j in study.jobs)}; writes "
              f"{study.out / 'summary.json'}, report.md, plots/" + (f" and {study.out / 'ensemble'}" if ensemble else "")]
    return "\n".join(lines)


def _state(run_dir: Path) -> str:
    """Why a run's folder does not hold a finished run of the study, in a few words."""
    if not run_dir.is_dir():
        return "missing"
    if outputs.holds_complete_run(run_dir):
        return "finished on other data, run it again"
    try:
        outputs.refuse_if_locked(run_dir)
    except HfMedtlError:
        return f"still running (its {outputs.LOCK} names a live process)"
    return "started but not finished: failed or killed"


def _check_ensemble(study: Study, ensemble: bool) -> None:
    if ensemble and len(study.jobs) < 2:
        raise HfMedtlError("--ensemble needs at least 2 models: use --folds 2 or more (or --seeds 2 or more)")
    if ensemble and study.base.training.world_size > 1:
        # The ensemble is scored by the main process alone; a launch's other processes would wait on it forever.
        raise HfMedtlError("cv --ensemble under a multi-process launch: run the folds as jobs (accelerate launch ... "
                           "cv RECIPE --fold K --seed S, see --plan), then --collect --ensemble as one process")


def _summarize(recipe_path, study: Study, done: list[tuple[FoldRun, dict]], staging: Path, ensemble: bool) -> dict:
    """The study's summary, report, plot (and ensemble) from its finished runs, committed summary.json last. Under
    a multi-process launch the main process writes them (``staging``: None elsewhere) while the others wait."""
    base, out = study.base, study.out
    with base.training.main_process_first(desc="cv summary"):
        if staging is not None:
            _write_summary(recipe_path, study, done, staging, ensemble)
    return json.loads((out / SUMMARY).read_text())


def _write_summary(recipe_path, study: Study, done: list[tuple[FoldRun, dict]], staging: Path, ensemble: bool) -> None:
    base, out, folds, seeds = study.base, study.out, study.folds, study.seeds
    runs = [{"seed": job.seed, "fold": job.fold, "dir": str(job.dir), "test": m["test"], "validation": m["validation"],
             "epochs_run": m["epochs_run"]} for job, m in done]
    summary = {"recipe": str(recipe_path), "output_dir": str(out), "folds": folds, "seeds": seeds,
               "split_seed": study.split_seed,
               "runs": [{k: v for k, v in r.items() if k not in ("test", "validation")} |
                        {"test": headline(r["test"]), "test_ci": r["test"].get("ci", {}),
                         "validation": headline(r["validation"])} for r in runs],
               "test": spread([r["test"] for r in runs]), "validation": spread([r["validation"] for r in runs])}
    if folds > 1:
        summary["out_of_fold"] = _out_of_fold(runs, base, staging)
    if ensemble:
        summary["ensemble"] = _ensemble(base, runs, [m for _, m in done], out / "ensemble")
    _plot(runs, staging / "plots" / "folds.png")
    finish(staging, out, summary, markdown(summary))


def _ensemble(base, runs: list[dict], member_metrics: list[dict], out: Path) -> dict:
    """The runs' models as one ensemble model in ``out`` (its test scores, members and gain over the best one)."""
    from hf_medtl.studies.ensemble import save_ensemble

    m = save_ensemble(base, [Path(r["dir"]) for r in runs], [_label(r) for r in runs], member_metrics, out, ("test",),
                      "cv folds" if runs[0]["fold"] is not None else "seeds")
    return {"dir": str(out), "test": headline(m["test"]), "test_ci": m["test"].get("ci", {}),
            **{k: v for k, v in m["ensemble"].items() if k != "members"}}


def _out_of_fold(runs: list[dict], base, staging: Path) -> dict:
    """Per seed: every fold's validation predictions (each pool image exactly once), scored once."""
    out = {}
    for seed in sorted({r["seed"] for r in runs}):
        dirs = [Path(r["dir"]) for r in runs if r["seed"] == seed]
        m = score_out_of_fold(dirs, staging / f"predictions_out_of_fold_seed-{seed}.csv", base.evaluation, seed)
        out[str(seed)] = {"n": m["n"], **headline(m), "ci": m.get("ci", {})}
    return out


def _label(r: dict) -> str:
    return f"s{r['seed']}" + (f"/f{r['fold']}" if r["fold"] is not None else "")


def _plot(runs: list[dict], path: Path) -> None:
    plt = pyplot()
    keys = [k for k in ("accuracy", "f1_macro", "roc_auc") if all(r["test"].get(k) is not None for r in runs)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    x = np.arange(len(runs))
    for ax, key in zip(axes[0], keys):
        v = np.array([r["test"][key] for r in runs])
        ci = np.array([r["test"].get("ci", {}).get(key, [r["test"][key]] * 2) for r in runs])
        ax.errorbar(x, v, yerr=[v - ci[:, 0], ci[:, 1] - v], fmt="o", capsize=3, label="test, 95% CI")
        ax.axhline(v.mean(), color="k", lw=1, label=f"mean {v.mean():.3f}")
        if len(v) > 1:
            ax.axhspan(v.mean() - v.std(ddof=1), v.mean() + v.std(ddof=1), color="grey", alpha=0.2, label="± 1 sd")
        ax.set_xticks(x, [_label(r) for r in runs], rotation=45 if len(runs) > 6 else 0, fontsize=8)
        ax.set_title(key)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def markdown(s: dict) -> str:
    lines = [f"# Cross-validation: {s['recipe']}", "",
             f"{s['folds']} fold(s) x {s['seeds']} seed(s); one test split (split seed {s['split_seed']}) for every run.",
             "", "| metric | test mean ± sd | test range | validation mean ± sd |", "|---|---|---|---|"]
    for key, t in s["test"].items():
        v = s["validation"].get(key)
        lines.append(f"| {key} | {fmt(key, t['mean'])} ± {fmt(key, t['sd'])} | {fmt(key, t['min'])} – "
                     f"{fmt(key, t['max'])} | {fmt(key, v['mean']) + ' ± ' + fmt(key, v['sd']) if v else ''} |")
    lines += ["", "| run | test accuracy (95% CI) | test F1 macro (95% CI) | test ROC-AUC | epochs |", "|---|---|---|---|---|"]
    for r in s["runs"]:
        ci = r["test_ci"]
        cell = lambda k: fmt(k, r["test"][k]) + (f" ({fmt(k, ci[k][0])} – {fmt(k, ci[k][1])})" if k in ci else "")  # noqa: E731
        lines.append(f"| seed {r['seed']}" + (f", fold {r['fold']}" if r["fold"] is not None else "") + " | "
                     f"{cell('accuracy')} | {cell('f1_macro')} | {fmt('roc_auc', r['test']['roc_auc'])} | {r['epochs_run']} |")
    if "out_of_fold" in s:
        lines += ["", "Pooled out-of-fold predictions (each pool image scored once, by the fold that held it out "
                  "as validation; validation also chose θ*, so these lean optimistic):", "",
                  "| seed | images | accuracy (95% CI) | F1 macro | ROC-AUC |", "|---|---|---|---|---|"]
        for seed, m in s["out_of_fold"].items():
            ci = m["ci"].get("accuracy")
            lines.append(f"| {seed} | {m['n']} | {fmt('accuracy', m['accuracy'])}"
                         f"{f' ({fmt(None, ci[0])} – {fmt(None, ci[1])})' if ci else ''} | "
                         f"{fmt('f1_macro', m['f1_macro'])} | {fmt('roc_auc', m['roc_auc'])} |")
    if "ensemble" in s:
        e, ci = s["ensemble"], s["ensemble"]["test_ci"].get("accuracy")
        g = e.get("gain_over_best_member")
        lines += ["", f"Ensemble of the {len(s['runs'])} models, saved as one model in `{e['dir']}` (its forward averages "
                  f"their probabilities): test accuracy {fmt('accuracy', e['test']['accuracy'])}"
                  + (f" (95% CI {fmt(None, ci[0])} – {fmt(None, ci[1])})" if ci else "")
                  + f", F1 macro {fmt('f1_macro', e['test']['f1_macro'])}"
                  + (f"; against its best member ({e['best_member']}) {100 * g['difference']:+.2f} points"
                     + (f" (95% paired bootstrap CI {100 * g['ci'][0]:+.2f} to {100 * g['ci'][1]:+.2f})" if g.get("ci") else "")
                     if g else "") + "."]
    lines += ["", "![folds](plots/folds.png)", ""]
    return "\n".join(lines)
