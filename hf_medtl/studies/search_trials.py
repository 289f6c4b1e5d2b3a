"""The trials of a search shared by any number of workers: the Optuna storage (a journal file, or an RDB URL with a
heartbeat), the study it holds (one recipe's), each trial claimed by its worker, dead workers' trials failed, and
one trial at a time until the study holds the requested number."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path

from hf_medtl import outputs
from hf_medtl.errors import HfMedtlError
from hf_medtl.studies.reuse import HOW_IT_RUNS

logger = logging.getLogger("hf_medtl")
JOURNAL = "optuna_journal.log"
RECIPE_ATTR, WORKER_ATTR = "hf_medtl_recipe", "hf_medtl_worker"  # Optuna user attributes: the study's, a trial's
HEARTBEAT_S = 60  # RDB storages: a trial whose worker has not beaten for 2 x this long is marked failed


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


def open_study(storage, where: str, name: str, recipe):
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


def trial_claimer(n_trials: int):
    """Called as a trial starts: mark it with its worker (host, PID: a dead worker's trial is then failed, not left
    running) and prune it when, counting every finished trial and every trial started before it, the study is
    already full (two workers that started their last trial at the same instant: one of them gives way)."""
    import optuna

    claimed: set[int] = set()

    def claim(trial) -> None:
        if trial.number in claimed:  # suggest runs twice per trial (the Trainer's setup, then model_init)
            return
        claimed.add(trial.number)
        trial.set_user_attr(WORKER_ATTR, json.loads(outputs.this_process()))
        ahead = sum(t.state == optuna.trial.TrialState.COMPLETE or
                    (t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number)
                    for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number)
        if ahead >= n_trials:
            raise optuna.TrialPruned(f"the study already has its {n_trials} trials")

    return claim


def run_trials(trainer, study, storage, name: str, suggest, n_trials: int, args, out: Path) -> None:
    """One trial at a time while the finished trials and those running (in this worker or others) are fewer than
    ``n_trials``. Before each, the trials of dead workers are marked failed: they count for nothing, and their
    place is run again. Ranks other than the main one follow its decisions (Trainer.hyperparameter_search runs
    Optuna on the main rank only)."""
    import optuna

    while True:
        more = None
        if args.process_index == 0:
            fail_dead(study, storage, out)
            counts = trial_counts(study)
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


def fail_dead(study, storage, out: Path) -> None:
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
        if worker is not None and not outputs.owner_alive(worker, out / outputs.LOCK):
            try:
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                logger.warning(f"search: trial {t.number} was left running by PID {worker.get('pid')} on "
                               f"{worker.get('host')}, which is gone; marked failed, its place is run again")
            except RuntimeError:  # finished meanwhile (UpdateFinishedTrialError)
                pass


def trial_counts(study) -> dict:
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
