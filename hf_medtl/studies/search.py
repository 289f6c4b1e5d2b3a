"""`hf-medtl study search RECIPE --trials N`: hyperparameter sensitivity through ``Trainer.hyperparameter_search``
with the Optuna backend, over the recipe's ``search_space``. Each trial trains with the adaptive schedule and
is scored on the validation split at θ* (the test split is never predicted); the study writes the trials
table, the best recipe as a re-runnable JSON, and Optuna's importance and slice plots. Trials are kept in an
Optuna storage — a journal file beside the outputs by default, or any RDB URL (``--storage``) — so a rerun
continues the study instead of repeating finished trials, and any number of workers (processes, machines) started
on one study share its trials: each runs distinct trials until the study holds the requested number in total."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_medtl import outputs
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.plots import pyplot
from hf_medtl.studies.reuse import HOW_IT_RUNS
from hf_medtl.studies.runs import begin, finish, study_lock

logger = logging.getLogger("hf_medtl")
DEFAULT_SPACE = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "threshold": {"choices": [0.8, 0.9, 0.95]},
                 "patience": {"low": 1, "high": 3}, "factor": {"choices": [0.3, 0.5, 0.7]}}
JOURNAL, STUDY = "optuna_journal.log", "hf_medtl_search"
RECIPE_ATTR, WORKER_ATTR = "hf_medtl_recipe", "hf_medtl_worker"  # Optuna user attributes: the study's, a trial's
HEARTBEAT_S = 60  # RDB storages: a trial whose worker has not beaten for 2 x this long is marked failed


def check_space(space: dict) -> dict[str, str]:
    """key -> its recipe group; a data key (the data is built once), an unknown key or a malformed range is
    refused with one line."""
    from hf_medtl.config.recipe import check_key, recipe_fields

    fields, groups = recipe_fields(), {}
    for key, spec in space.items():
        check_key(key, fields, "search_space")
        groups[key] = fields[key][0]
        if groups[key] not in ("model", "schedule", "training"):
            raise HfMedtlError(f"search_space: '{key}' is a {groups[key]} key; only model, schedule and training keys "
                               "can be searched (the data is split and built once)")
        ok = isinstance(spec, dict) and (("choices" in spec and isinstance(spec["choices"], list) and spec["choices"])
                                         or ({"low", "high"} <= set(spec) and spec["low"] < spec["high"]))
        if not ok:
            raise HfMedtlError(f"search_space: '{key}' must be {{\"low\": a, \"high\": b[, \"log\": true]}} with a < b, "
                               f"or {{\"choices\": [...]}}; got {json.dumps(spec)}")
    return groups


def check_values(space: dict, recipe_path, argv: list[str]) -> None:
    """Each range's bounds and each choice pass the recipe's own checks (a negative learning rate, a threshold
    above 1 ...); a log range must start above 0. One line naming the key and the value otherwise."""
    from hf_medtl.config.recipe import RecipeError, load_recipe

    for key, spec in space.items():
        if spec.get("log") and not spec["low"] > 0:
            raise HfMedtlError(f"search_space: '{key}' is searched on a log scale, so 'low' must be above 0, got "
                               f"{json.dumps(spec['low'])}")
        for value in spec.get("choices") or (spec["low"], spec["high"]):
            try:
                load_recipe(recipe_path, [*argv, f"--{key}", json.dumps(value)])
            except RecipeError as e:
                raise HfMedtlError(f"search_space: '{key}' value {json.dumps(value)} is not a valid recipe value "
                                   f"({str(e).split(': ', 1)[-1]})") from None


def hp_space(space: dict, claim=None):
    """Optuna's suggestions for ``space``; ``claim(trial)`` first, where given (multi-worker bookkeeping)."""
    def suggest(trial) -> dict:
        if claim is not None:
            claim(trial)
        out = {}
        for key, spec in space.items():
            if "choices" in spec:
                out[key] = trial.suggest_categorical(key, spec["choices"])
            elif all(isinstance(spec[b], int) and not isinstance(spec[b], bool) for b in ("low", "high")):
                out[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec.get("log", False))
            else:
                out[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
        return out

    return suggest


class _ScoreAtBest(TrainerCallback):
    """After the schedule has restored θ*, clear the last epoch's objective so that the search scores θ* on
    validation (run_hp_search_optuna evaluates when no objective is set)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.objective = None


def run_search(recipe_path: str | Path, argv: list[str], n_trials: int = 10, storage_url: str | None = None,
               study_name: str = STUDY) -> dict:
    """Run trials until the study holds ``n_trials`` finished ones in total, then write its outputs. Any number of
    workers may run this on one study (the same ``storage_url`` and ``study_name``): each trial is its worker's
    alone, and the worker that finds the study complete writes the summary (one writer at a time: study_lock)."""
    import optuna

    from hf_medtl import data, models

    from hf_medtl.training import trainer as train
    from hf_medtl.config.recipe import load_recipe, require_model
    from hf_medtl.training.schedule import AdaptiveSchedule

    # Optuna's own handler keeps the sys.stderr of the moment it was made (a closed one in a later command of the
    # same process); its warnings go through Python's last-resort handler instead, and hf_medtl says the rest.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    recipe = load_recipe(recipe_path, argv)
    require_model(recipe, recipe_path)
    space = recipe.study.search_space or DEFAULT_SPACE
    groups = check_space(space)
    check_values(space, recipe_path, argv)  # every bound and choice is a valid recipe value, before any data is read
    out = outputs.ensure_writable(recipe.training.output_dir)
    storage, where = open_storage(storage_url, out)  # an unreachable storage is one line, before the data is read
    study = _open_study(storage, where, study_name, recipe)
    main_process = recipe.training.process_index == 0
    staging = begin(out, private=True)  # this worker's own: other workers of the study stage beside it
    try:
        splits = data.load_splits(recipe.data, recipe.training.seed, out, write_dir=staging)
        splits.write_manifest(staging / data.MANIFEST)
        model, processor = models.load_backbone(recipe.model, splits.classes, recipe.data.image_size)
        datasets = data.to_datasets(splits, data.preprocessing_from_processor(processor), recipe.data)
        trainer, callback = train.build_trainer(model, processor, datasets, recipe)
        claim = _claim(n_trials) if recipe.training.world_size == 1 else None
        suggest = hp_space(space, claim)

        def model_init(trial):
            params = suggest(trial) if trial is not None else {}
            picked = lambda g: {k: v for k, v in params.items() if groups[k] == g}  # noqa: E731
            s = dataclasses.replace(recipe.schedule, **picked("schedule"))
            callback.schedule = AdaptiveSchedule.from_arguments(s)
            # Each trial's θ* is its own best epoch: the rule's best so far starts afresh, as the history does.
            callback.history, callback.best_state, callback.best_epoch, callback.best_key = [], None, None, None
            return models.load_backbone(dataclasses.replace(recipe.model, **picked("model")), splits.classes,
                                        recipe.data.image_size)[0]

        trainer.model_init = model_init
        trainer.add_callback(_ScoreAtBest(trainer))
        _run_trials(trainer, study, storage, study_name, suggest, n_trials, recipe.training, out)
        study = optuna.load_study(study_name=study_name, storage=storage)
        counts = _counts(study)
        if counts["finished"] < n_trials:  # the others' last trials are still running; their worker writes it
            logger.info(f"search: {counts['finished']} of {n_trials} trials finished, {counts['running']} running in "
                        "other workers; the worker that finishes the last one writes the summary")
            return {"recipe": str(recipe_path), "output_dir": str(out), "complete": False, **counts}
        if not main_process:
            return {"recipe": str(recipe_path), "output_dir": str(out), "complete": True, **counts}
        with study_lock(out, wait_s=300):  # workers that end together write in turn, each the whole study
            return _write(study, recipe, recipe_path, space, out, staging, where, study_name, counts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # committed (moved away) when the summary was written


def open_storage(url: str | None, out: Path):
    """(Optuna storage, where it is, printable): ``url`` with a scheme is an RDB URL (sqlite:///..., postgresql://...,
    mysql://...: SQLAlchemy's), opened with a heartbeat so that a dead worker's trial is marked failed on any
    machine; anything else is a journal file path (default: the journal in the study folder). One line when it
    cannot be opened: unknown scheme, no driver, no server, no such folder."""
    import optuna

    if url and "://" in url:
        shown = _hide_password(url)
        # SQLite serialises writers: wait for a busy database instead of failing the trial at once.
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # "heartbeat_interval is an experimental feature"
                    warnings.simplefilter("ignore")
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                      grace_period=2 * HEARTBEAT_S), shown
            except Exception as e:  # SQLAlchemy's and the drivers' errors: any of them means the same to the user
                # Workers started together all create the new database's tables: one wins, the others see an
                # IntegrityError or (SQLite) "table ... already exists"; the next try finds the tables made.
                race = "IntegrityError" in type(e).__name__ or "already exists" in str(e)
                if race and attempt < 4:
                    time.sleep(0.5)
                    continue
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0].replace(url, shown)
                raise HfMedtlError(f"--storage '{shown}': cannot open it ({reason}); check the URL, that its database "
                                   "server is reachable from here and its driver installed (postgresql: psycopg2, "
                                   "mysql: pymysql)") from None
    path = Path(url) if url else out / JOURNAL
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path))), str(path)
    except OSError as e:
        raise HfMedtlError(f"--storage '{path}': cannot open the journal file ({e.strerror or type(e).__name__}); "
                           "pass a file in a writable folder, or an RDB URL such as sqlite:///search.db") from None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: RDBStorage will say so; show the scheme only
        return url.split("://", 1)[0] + "://..."


def _open_study(storage, where: str, name: str, recipe):
    """The study ``name`` in ``storage``, created if new; one that holds another recipe's trials is refused (a
    worker started with other overrides, or two studies sharing one name on a shared database)."""
    import optuna

    from hf_medtl.config.recipe import recipe_difference

    # Every key but output_dir (the same study may be reached from other mounts) and how-to-run keys.
    mine = {k: v for k, v in json.loads(json.dumps(recipe.resolved, default=str)).items()
            if k not in HOW_IT_RUNS and k != "output_dir"}
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize")
    theirs = study.user_attrs.get(RECIPE_ATTR)
    if theirs is None:
        study.set_user_attr(RECIPE_ATTR, mine)
        return study
    changed = recipe_difference(theirs, mine)
    if changed:
        raise HfMedtlError(f"--storage '{where}': study '{name}' holds trials of another recipe ({changed}); start "
                           "every worker with the same recipe and overrides, or pass another --study_name")
    return study


def _claim(n_trials: int):
    """Called as a trial starts: mark it with its worker (host, PID: a dead worker's trial is then failed, not left
    running) and prune it when, counting every finished trial and every trial started before it, the study is
    already full (two workers that started their last trial at the same instant: one of them gives way)."""
    import optuna

    claimed: set[int] = set()

    def claim(trial) -> None:
        if trial.number in claimed:  # suggest runs twice per trial (the Trainer's setup, then model_init)
            return
        claimed.add(trial.number)
        trial.set_user_attr(WORKER_ATTR, json.loads(outputs._me()))
        ahead = sum(t.state == optuna.trial.TrialState.COMPLETE or
                    (t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number)
                    for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number)
        if ahead >= n_trials:
            raise optuna.TrialPruned(f"the study already has its {n_trials} trials")

    return claim


def _run_trials(trainer, study, storage, name: str, suggest, n_trials: int, args, out: Path) -> None:
    """One trial at a time while the finished trials and those running (in this worker or others) are fewer than
    ``n_trials``. Before each, the trials of dead workers are marked failed: they count for nothing, and their
    place is run again. Ranks other than the main one follow its decisions (Trainer.hyperparameter_search runs
    Optuna on the main rank only)."""
    import optuna

    while True:
        more = None
        if args.process_index == 0:
            _fail_dead(study, storage, out)
            counts = _counts(study)
            more = counts["finished"] + counts["running"] < n_trials
            if more:
                logger.info(f"search: {counts['finished']} of {n_trials} trials finished, {counts['running']} running; "
                            f"starting trial {len(study.get_trials(deepcopy=False))}")
        if not _from_main(more, args):
            return
        # Seeded by the number of trials so far: one worker's search is reproducible; workers started together
        # draw alike at first, which TPE's constant liar (running trials count as bad) spreads afterwards.
        before = len(study.get_trials(deepcopy=False))
        trainer.hyperparameter_search(hp_space=suggest, compute_objective=lambda m: m["eval_accuracy"], n_trials=1,
                                      direction="maximize", backend="optuna", study_name=name, storage=storage,
                                      load_if_exists=True, sampler=optuna.samplers.TPESampler(
                                          seed=args.seed + before, constant_liar=True))
        if args.process_index == 0:
            _log_mine(study, before)


def _log_mine(study, since: int) -> None:
    """One line for the trial this worker has just run (the first since ``since`` that names this process)."""
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for t in study.get_trials(deepcopy=False)[since:]:
        worker = t.user_attrs.get(WORKER_ATTR) or {}
        if {k: worker.get(k) for k in me} == me and t.state.is_finished():
            value = f": validation accuracy {t.value:.4f}" if t.value is not None else ""
            logger.info(f"search: trial {t.number} {t.state.name.lower()}{value} with {json.dumps(t.params)}")
            return


def _fail_dead(study, storage, out: Path) -> None:
    """Mark failed every running trial whose worker is gone: on this host by its PID (as the run lock tells a
    dead owner), on any host by the RDB storage's heartbeat (optuna.storages.fail_stale_trials)."""
    import optuna

    if isinstance(storage, optuna.storages.RDBStorage):  # opened with a heartbeat (open_storage)
        with warnings.catch_warnings():  # "experimental" notes
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        # Between two trials none of this process's is running: a trial naming its PID is a dead namesake's.
        if worker is not None and not outputs._alive(worker, out / outputs.LOCK):
            try:
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                logger.warning(f"search: trial {t.number} was left running by PID {worker.get('pid')} on "
                               f"{worker.get('host')}, which is gone; marked failed, its place is run again")
            except RuntimeError:  # finished meanwhile (UpdateFinishedTrialError)
                pass


def _counts(study) -> dict:
    import optuna

    states = [t.state for t in study.get_trials(deepcopy=False)]
    S = optuna.trial.TrialState
    return {"finished": states.count(S.COMPLETE), "running": states.count(S.RUNNING), "failed": states.count(S.FAIL),
            "pruned": states.count(S.PRUNED)}


def _from_main(value, args):
    """The main rank's ``value`` on every rank."""
    if args.world_size <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _write(study, recipe, recipe_path, space: dict, out: Path, staging: Path, where: str, name: str, counts: dict) -> dict:
    best = study.best_trial
    best_recipe = {**{k: v for k, v in recipe.resolved.items() if k != "search_space"}, **best.params,
                   "output_dir": str(out / "best")}
    (staging / "best_recipe.json").write_text(json.dumps(best_recipe, indent=2, default=str) + "\n")
    table = study.trials_dataframe(attrs=("number", "value", "params", "state", "duration"))
    table.to_csv(staging / "trials.csv", index=False)
    plots = _plots(study, staging / "plots")
    summary = {"recipe": str(recipe_path), "output_dir": str(out), "objective": "validation accuracy at θ*",
               "space": space, "storage": where, "study_name": name, "trials": counts["finished"],
               "failed": counts["failed"], "pruned": counts["pruned"], "best_trial": best.number,
               "best_value": best.value, "best_params": best.params, "plots": plots}
    finish(staging, out, summary, markdown(summary, table))
    return {**summary, "complete": True}


def _plots(study, plot_dir: Path) -> dict:
    """Optuna's matplotlib importance and slice plots; a plot Optuna cannot draw yet is named with the reason."""
    import optuna.visualization.matplotlib as ovm

    plt = pyplot()
    plot_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, draw in (("importance", ovm.plot_param_importances), ("slice", ovm.plot_slice)):
        try:
            with warnings.catch_warnings():  # Optuna's "experimental" notes and few-trial layout warnings
                warnings.simplefilter("ignore")
                ax = draw(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(max(6.0, fig.get_size_inches()[0]), 4.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig.tight_layout()
            fig.savefig(plot_dir / f"{name}.png", dpi=100)
            plt.close(fig)
            out[name] = f"plots/{name}.png"
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            out[name] = f"not drawn: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return out


def markdown(s: dict, table) -> str:
    lines = [f"# Hyperparameter search: {s['recipe']}", "",
             f"{s['trials']} trial(s); objective: {s['objective']} (the test split is not used). Best: trial "
             f"{s['best_trial']}, {s['best_value']:.4f}, with {json.dumps(s['best_params'])}; re-run it with "
             "`hf-medtl finetune best_recipe.json`.", "", table.to_markdown(index=False) if _has_tabulate() else
             "```\n" + table.to_string(index=False) + "\n```", ""]
    lines += [f"![{k}]({v})" if v.startswith("plots/") else f"{k} plot {v}" for k, v in s["plots"].items()]
    return "\n".join(lines) + "\n"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
