"""`hf-medtl study search RECIPE --trials N`: hyperparameter sensitivity through ``Trainer.hyperparameter_search``
with the Optuna backend, over the recipe's ``search_space``. Each trial trains with the adaptive schedule and
is scored on the validation split at θ* (the test split is never predicted); the study writes the trials
table, the best recipe as a re-runnable JSON, and Optuna's importance and slice plots. Trials are kept in an
Optuna storage — a journal file beside the outputs by default, or any RDB URL (``--storage``) — so a rerun
continues the study instead of repeating finished trials, and any number of workers (processes, machines) started
on one study share its trials: each runs distinct trials until the study holds the requested number in total
(search_trials.py). The data and the model are built as a run builds them (hf_medtl.stages.split_and_model), so
multi-label data is searched with a multi-label head (validation accuracy: the mean per-finding accuracy at 0.5)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_medtl import outputs
from hf_medtl.config.commands import SearchOptions
from hf_medtl.errors import HfMedtlError
from hf_medtl.evaluation.plots import pyplot
from hf_medtl.studies import search_trials as trials
from hf_medtl.studies.runs import begin, finish, study_lock

logger = logging.getLogger("hf_medtl")
DEFAULT_SPACE = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "threshold": {"choices": [0.8, 0.9, 0.95]},
                 "patience": {"low": 1, "high": 3}, "factor": {"choices": [0.3, 0.5, 0.7]}}
STUDY = SearchOptions.study_name


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


def run_search(recipe_path: str | Path, argv: list[str], n_trials: int = SearchOptions.trials, storage_url: str | None = None,
               study_name: str = STUDY) -> dict:
    """Run trials until the study holds ``n_trials`` finished ones in total, then write its outputs. Any number of
    workers may run this on one study (the same ``storage_url`` and ``study_name``): each trial is its worker's
    alone, and the worker that finds the study complete writes the summary (one writer at a time: study_lock)."""
    import optuna

    from hf_medtl import stages
    from hf_medtl.config.recipe import load_recipe, require_model
    from hf_medtl.training import trainer as train
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
    storage, where = trials.open_storage(storage_url, out)  # an unreachable storage is one line, before the data is read
    study = trials.open_study(storage, where, study_name, recipe)
    main_process = recipe.training.process_index == 0
    staging = begin(out, private=True)  # this worker's own: other workers of the study stage beside it
    try:
        # The data and the model as a run builds them (a multi-label head for multi-label data): its one path.
        splits, model, processor, datasets = stages.split_and_model(recipe, out, staging, main_process)
        wired = train.build_trainer(model, processor, datasets, recipe)
        trainer, callback = wired.trainer, wired.adaptive
        claim = trials.trial_claimer(n_trials) if recipe.training.world_size == 1 else None
        suggest = hp_space(space, claim)

        def model_init(trial):
            params = suggest(trial) if trial is not None else {}
            picked = lambda g: {k: v for k, v in params.items() if groups[k] == g}  # noqa: E731
            s = dataclasses.replace(recipe.schedule, **picked("schedule"))
            # Each trial's θ* is its own best epoch: the rule's best so far starts afresh, as the history does.
            callback.restart(AdaptiveSchedule.from_arguments(s))
            return stages.new_model(recipe, splits, dataclasses.replace(recipe.model, **picked("model")))[0]

        trainer.model_init = model_init
        trainer.add_callback(_ScoreAtBest(trainer))
        trials.run_trials(trainer, study, storage, study_name, suggest, n_trials, recipe.training, out)
        study = optuna.load_study(study_name=study_name, storage=storage)
        counts = trials.trial_counts(study)
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
