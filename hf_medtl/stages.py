"""The stages of a run, in the order ``run`` calls them: prepare (where things go, the data, the model) -> train ->
predict -> score -> save. Each owns its inputs and outputs; every process runs them, the main one writes. ``run``
is one model's run end to end (hf_medtl.studies.runs.run adds the seed ensembles; the CLI and the script call that).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hf_medtl import data, hub, models, outputs, timings
from hf_medtl.hub.finished import write_finished_run
from hf_medtl.inference import core
from hf_medtl.training import feature_cache, knn
from hf_medtl.training import trainer as training
from hf_medtl.training.record import TrainingRecord

logger = logging.getLogger("hf_medtl")


@dataclass
class Run:
    """What the stages hand on: the recipe, where the outputs go, the split, the model and its datasets."""

    recipe: object
    output_dir: Path
    staging: Path
    main_process: bool
    splits: object
    model: object
    processor: object
    datasets: dict
    trainer: object = None
    record: TrainingRecord = None  # what training hands on: history, θ*'s epoch and source, budget, memory...
    model_alone: dict = field(default_factory=dict)  # split -> (probabilities, labels) without TTA (stages.predict)

    @property
    def cached(self) -> bool:
        return feature_cache.applies(self.recipe)


def prepare(recipe) -> Run:
    """Credentials, the output folder, the checked split (decided and written down before any model is built),
    the backbone with a new head, and the datasets it reads."""
    from transformers import set_seed

    args = recipe.training
    if args.push_to_hub:  # credentials and repo rights checked before any data is read or weight trained
        hub.preflight(args)
    set_seed(args.seed)
    output_dir, main_process = Path(args.output_dir), args.process_index == 0
    if main_process:
        outputs.ensure_writable(output_dir)
        outputs.staging_dir(output_dir)
    staging = output_dir / outputs.STAGING
    # A finished run in output_dir stays whole until this one has finished too: its data files are written beside
    # the staged outputs, not over the old run's.
    data_out = staging if outputs.holds_complete_run(output_dir) else output_dir
    checkpoint = outputs.resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint:  # another run's checkpoint: one line now, before the data check
        outputs.check_checkpoint_recipe(checkpoint, recipe.resolved)
    models.hub_source.check_available(recipe.model)  # an unobtainable Hub id: one line now, not after the data check
    splits, model, processor, datasets = split_and_model(recipe, output_dir, data_out, main_process)
    return Run(recipe, output_dir, staging, main_process, splits, model, processor, datasets)


def split_and_model(recipe, output_dir: Path, write_dir: Path, main_process: bool) -> tuple:
    """(splits, model, processor, datasets): the checked split (the previous manifest in ``output_dir`` reused when
    the data has not changed; data_report.json and split_manifest.csv written into ``write_dir`` by the main
    process), the backbone with a new head for its classes and the datasets it reads. Runs and searches alike."""
    splits = data.load_splits(recipe.data, recipe.training.seed, output_dir, write=main_process, write_dir=write_dir)
    if main_process:
        splits.write_manifest(write_dir / data.MANIFEST)
        logger.info(data.summary_line(splits))
    model, processor = new_model(recipe, splits)
    datasets = data.to_datasets(splits, data.preprocessing_from_processor(processor), recipe.data,
                                lambda: recipe.training.main_process_first(desc="image cache"))  # rank 0 decodes
    return splits, model, processor, datasets


def new_model(recipe, splits, model_args=None) -> tuple:
    """(model, processor): the backbone with a new head for the split's classes, multi-label when the data is;
    ``model_args``: other model settings than the recipe's (a search trial's)."""
    with timings.phase("model_load"):
        return models.load_backbone(model_args or recipe.model, splits.classes, recipe.data.image_size,
                                    splits.multi_label)


def train(run: Run) -> None:
    """Train with the adaptive schedule; the model ends holding θ*, as it is served (TTA inside). A backbone frozen
    throughout on images that are not augmented: its features are computed once (or reused) and the head trains
    on them."""
    if run.recipe.model.finetune_strategy == "knn":  # no gradient training: a bank of training features (training/knn.py)
        run.model, run.record = knn.fit(run.model, run.processor, run.datasets, run.splits, run.recipe,
                                        run.main_process)
        run.trainer = training.inference_trainer(run.model, run.recipe.training.per_device_eval_batch_size,
                                                 run.recipe.training)
        run.trainer.processing_class = run.processor
    else:
        _fit(run)
    views = core.RUN_TTA_VIEWS[run.recipe.evaluation.tta]
    # The views hf_medtl's serving (predict, evaluate, app, ONNX export) averages over, in config.json; the model
    # stays its backbone's own class, so plain pipeline() loads it without remote code and serves it alone.
    core.record_views(run.model, views)
    if len(views) > 1 and run.recipe.evaluation.tta_inside:  # opt-in: the views inside the saved model's forward
        from hf_medtl.models.ensemble import with_views

        run.model = with_views(run.model, run.processor, list(views))
        run.trainer = training.inference_trainer(run.model, run.recipe.training.per_device_eval_batch_size,
                                                 run.recipe.training)
        run.trainer.processing_class = run.processor


def _fit(run: Run) -> None:
    import torch

    recipe = run.recipe
    if run.cached:
        sets = feature_cache.cached_datasets(run.model, run.processor, run.datasets, run.splits, recipe, run.main_process)
        wired = training.build_trainer(feature_cache.HeadOnly(run.model), run.processor, sets, recipe)
    else:
        wired = training.build_trainer(run.model, run.processor, run.datasets, recipe)
    run.trainer = wired.trainer
    checkpoint = outputs.resolve_checkpoint(recipe.training.resume_from_checkpoint, run.output_dir)
    if checkpoint:
        wired.adaptive.load_checkpoint(checkpoint)
        logger.info(training.resumed_line(checkpoint, wired.adaptive))
    interrupt = wired.interrupt  # Ctrl-C / SIGTERM: this epoch saved, then a stop (training/interrupt.py)
    interrupt.install()
    try:
        run.record = wired.record(run.trainer.train(resume_from_checkpoint=checkpoint).metrics)
    finally:
        interrupt.restore()
    if interrupt.stopped_after:
        raise training.TrainingInterrupted(*interrupt.stopped_after)
    run.model.to(memory_format=torch.contiguous_format)  # (channels_last on GPUs): saved and served in the standard layout
    from hf_medtl.models import lora

    if lora.applies(recipe.model):  # merged before scoring: what predict scores is the plain model that is saved
        adapter = run.staging / "adapter" if recipe.model.save_adapter and run.main_process else None
        lora.merge(run.model, adapter)
    if run.cached:  # scored as it is served: the whole model (backbone + trained head) on the images
        run.trainer = training.inference_trainer(run.model, recipe.training.per_device_eval_batch_size, recipe.training)
        run.trainer.processing_class = run.processor


def predict(run: Run) -> dict:
    """split -> (probabilities, labels) of θ* on validation and test with the recipe's TTA: the mean over its views
    (inside the forward with `tta_inside`). The image-alone probabilities, what plain pipeline() serves, are kept
    in run.model_alone (the identity view of the same passes) when the views are applied around the model."""
    views = core.views_outside_of(run.model, core.RUN_TTA_VIEWS[run.recipe.evaluation.tta])
    out, run.model_alone = {}, {}
    for split in ("validation", "test"):
        per_view, labels = core.dataset_view_probabilities(run.trainer, run.datasets[split], views)
        out[split] = (core.average(per_view), labels)  # the one averaging rule
        if len(per_view) > 1:
            run.model_alone[split] = (per_view[0], labels)
    return out


def score(run: Run, predictions: dict) -> dict:
    """split -> metrics of the predictions (with the recipe's TTA), and under "model_alone" the image-alone scores
    (what plain transformers serves) when they differ: the run reports both."""
    from hf_medtl.evaluation.scoring import score_splits

    args = run.recipe
    results = score_splits(predictions, run.splits.classes, args.evaluation, args.training.seed)
    if run.model_alone:
        results["model_alone"] = score_splits(run.model_alone, run.splits.classes, args.evaluation, args.training.seed)
    return results


def summary(run: Run) -> dict:
    """How the run went: epochs, LR reductions, θ*'s epoch and source, parameters, the split."""
    record = run.record
    history, best = record.history, record.best_epoch
    return {
        "epochs_run": len(history),
        "lr_reductions": history[-1].get("reductions", 0) if history else 0,
        "best_epoch": best,
        "best_source": record.theta_source,  # the weights θ* is: last / best (an epoch's own) / ema / swa
        "train_accuracy": next((h["train_accuracy"] for h in history if h["epoch"] == best), None),
        "train_accuracy_mode": run.recipe.schedule.train_accuracy,
        "train_runtime_s": record.train_runtime_s,
        # The Trainer's wall time over its epochs (validation passes included); None for k-NN, which has no epochs.
        "seconds_per_epoch": record.train_runtime_s / len(history) if history else None,
        # Training's peak (training/memory.py: CUDA allocator peak, or on CPU the process's sampled RSS); k-NN: its
        # feature pass's. "memory" says which was measured and its value when measuring began.
        "peak_memory_mb": record.memory["peak_mb"] if record.memory else None,
        "memory": record.memory,
        "cached_features": run.cached,
        "budget": record.budget,  # how the epoch count was chosen (training/budget.py)
        **({"swa": record.swa} if record.swa else {}),  # training/swa.py: the average
        **({"knn": record.knn} if record.knn is not None else {}),  # k and metric chosen, and why
        "trainable_parameters": phases(history),
        "total_parameters": sum(p.numel() for p in run.model.parameters()),
        "model_class": type(run.model).__name__,  # what loads it: hf_medtl's own classes need their saved code
        "split_counts": run.splits.counts(),
        # allow_missing_classes: the classes a split had no image of (their metrics there are not scored)
        **({"absent_classes": absent} if (absent := run.splits.report.get("absent_classes")) else {}),
        "classes": run.splits.classes,
    }


def phases(history: list[dict]) -> list[dict]:
    """The trainable-parameter count of each phase of the run: [{from_epoch, trainable_params}, ...]."""
    out = []
    for h in history:
        if "trainable_params" in h and (not out or out[-1]["trainable_params"] != h["trainable_params"]):
            out.append({"from_epoch": h["epoch"], "trainable_params": h["trainable_params"]})
    return out


def save(run: Run, metrics: dict, predictions: dict) -> None:
    """Model + processor (pipeline-loadable), history, resolved recipe, model card, report, plots and predictions;
    metrics.json last, so that its presence means a complete run. Then the push, when asked for."""
    with outputs.writing(run.staging / "model.safetensors"):  # a full disk: one line naming the file
        run.trainer.save_model(str(run.staging))  # every rank calls it; only the main one writes
    if not run.main_process:
        return
    recipe, splits = run.recipe, run.splits
    write_finished_run(run.staging, run.output_dir, recipe, metrics, predictions,
                       {split: [splits.relpath(s) for s in splits.files(split)] for split in predictions},
                       splits.report, f"{run.output_dir.name}: {recipe.model.model_name_or_path}",
                       report_summary={k: v for k, v in metrics.items() if k not in predictions},
                       history=run.record.history, model_alone=run.model_alone, timed=True)


def run(recipe) -> dict:
    """One recipe's single model end to end; its metrics (the summary, validation and test). Every process runs
    this; the main one writes. Each stage is a phase of the running clock (hf_medtl/timings.py): metrics.json's
    "timings"."""
    # The run owns output_dir from before any data is read until it has committed or failed: a second run into it
    # is refused instead of mixing its files with this one's. Rank 0 holds the lock for every rank.
    with outputs.run_lock(recipe.training.output_dir, take=recipe.training.process_index == 0):
        with timings.phase("data"):  # (the image cache and the model load are phases of their own inside)
            state = prepare(recipe)  # output folder, checked split, backbone with a new head, datasets
        with timings.phase("train_setup"):  # (the epochs are phases of their own: training/progress.py)
            train(state)  # the Trainer with the adaptive schedule; the model ends holding θ*
        with timings.phase("scoring"):
            predictions = predict(state)  # θ* on validation and test, with the recipe's TTA
            results = score(state, predictions)  # with the recipe's TTA, and the model alone
        metrics = {**summary(state), **results}
        with timings.phase("save"):  # (report and card inside are phases of their own)
            save(state, metrics, predictions)  # metrics.json last: its presence means a complete run
    return metrics
