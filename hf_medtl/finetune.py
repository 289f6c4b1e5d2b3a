"""Fine-tune a pretrained backbone on a medical image dataset, as a JSON recipe says.

    accelerate launch hf_medtl/finetune.py recipes/brain_densenet.json [--key value ...]

recipe -> data split -> backbone -> Trainer with the adaptive schedule -> test metrics -> saved model.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (accelerate launch hf_medtl/finetune.py): import the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from hf_medtl.console import run_command, setup_logging  # noqa: E402
from hf_medtl.config.recipe import load_recipe, require_model, write_resolved  # noqa: E402

logger = logging.getLogger("hf_medtl")


def run(recipe) -> dict:
    """Run one recipe end to end; return the test metrics. Every process runs this; the main one writes."""
    import torch
    from transformers import set_seed

    from hf_medtl import data, hub, models, outputs

    from hf_medtl.evaluation import evaluate as evaluation

    from hf_medtl.training import feature_cache as features

    from hf_medtl.evaluation import multilabel as multilabel_eval

    from hf_medtl.evaluation import report

    from hf_medtl.training import trainer as train

    args = recipe.training
    if args.push_to_hub:  # credentials and repo rights checked before any data is read or weight trained
        hub.preflight(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    main_process = args.process_index == 0

    # 0. Where things go. A finished run in output_dir stays whole until this one has finished too: its data
    #    files are written beside the staged outputs, not over the old run's.
    if main_process:
        outputs.ensure_writable(output_dir)
        staging = outputs.staging_dir(output_dir)
    staging = output_dir / outputs.STAGING
    data_out = staging if outputs.holds_complete_run(output_dir) else output_dir

    # 1. Data: every image checked, duplicates and patients grouped, split (or the previous split reused),
    #    all decided and written down before any model is built.
    splits = data.load_splits(recipe.data, args.seed, output_dir, write=main_process, write_dir=data_out)
    if main_process:
        splits.write_manifest(data_out / data.MANIFEST)
        logger.info(data.summary_line(splits))

    # 2. Backbone: pretrained weights, a new head for our classes, the processor it serves with.
    multi_label = splits.multi_label
    model, processor = models.load_backbone(recipe.model, splits.classes, recipe.data.image_size, multi_label)
    datasets = data.to_datasets(splits, data.preprocessing_from_processor(processor), recipe.data,
                                lambda: args.main_process_first(desc="image cache"))  # rank 0 decodes, others read

    # 3. Train with the adaptive schedule; the model ends holding θ*. A backbone frozen throughout on images
    #    that are not augmented: its features are computed once (or reused) and the head trains on them.
    cached = features.applies(recipe)
    if cached:
        train_sets = features.cached_datasets(model, processor, datasets, splits, recipe, main_process)
        trainer, schedule_callback = train.build_trainer(features.HeadOnly(model), processor, train_sets, recipe)
    else:
        trainer, schedule_callback = train.build_trainer(model, processor, datasets, recipe)
    checkpoint = outputs.resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint:
        schedule_callback.load_checkpoint(checkpoint)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    model.to(memory_format=torch.contiguous_format)  # (channels_last on GPUs): saved and served in the standard layout

    # 4. Evaluate θ* on validation and test: the whole model (backbone + trained head) on the images.
    if cached:
        trainer = train.inference_trainer(model, args.per_device_eval_batch_size)
        trainer.processing_class = processor
    results, predictions = {}, {}
    for split in ("validation", "test"):
        predictions[split] = train.predict(trainer, datasets[split], recipe.evaluation.tta)
    for split in ("validation", "test"):
        if multi_label:  # thresholds chosen on validation, applied to both
            thresholds = multilabel_eval.youden_thresholds(predictions["validation"][1], predictions["validation"][0])
            results[split] = multilabel_eval.score_multilabel(*predictions[split], splits.classes, thresholds)
        else:
            results[split] = evaluation.score(*predictions[split], splits.classes, recipe.evaluation, args.seed)
    history = schedule_callback.history
    summary = {
        "epochs_run": len(history),
        "lr_reductions": history[-1].get("reductions", 0) if history else 0,
        "best_epoch": schedule_callback.best_epoch,
        "train_accuracy": next((h["train_accuracy"] for h in history if h["epoch"] == schedule_callback.best_epoch), None),
        "train_accuracy_mode": recipe.schedule.train_accuracy,
        "train_runtime_s": train_output.metrics["train_runtime"],
        "cached_features": cached,
        "trainable_parameters": phases(history),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "split_counts": splits.counts(),
        "classes": splits.classes,
    }

    # 5. Save: model + processor (pipeline-loadable), history, split manifest, resolved recipe, model card,
    #    report and plots; metrics.json last, so that its presence means a complete run.
    trainer.save_model(str(staging))  # every rank calls it; only the main one writes
    if main_process:
        write_resolved(recipe, staging)
        (staging / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        title = f"{output_dir.name}: {recipe.model.model_name_or_path}"
        if multi_label:
            probs, labels = predictions["test"]
            multilabel_eval.write_outputs(staging, title, results, summary, [splits.relpath(s) for s in splits.files("test")],
                                          labels, probs, splits.classes, recipe.model.model_name_or_path)
        else:
            (staging / "README.md").write_text(str(hub.render_model_card(recipe, {**summary, **results}, splits.report)))
            report.write_report(staging, title, results, predictions, summary, history)
            for split in ("validation", "test"):  # validation: a cv fold's out-of-fold predictions
                probs, labels = predictions[split]
                report.write_predictions(staging / f"predictions_{split}.csv",
                                         [splits.relpath(s) for s in splits.files(split)], labels, probs, splits.classes)
        (staging / outputs.MARKER).write_text(json.dumps({**summary, **results}, indent=2) + "\n")
        outputs.commit(staging, output_dir)
        if args.push_to_hub:
            logger.info(f"pushed to https://huggingface.co/{hub.push(output_dir, args)}")
    return {**summary, **results}


def phases(history: list[dict]) -> list[dict]:
    """The trainable-parameter count of each phase of the run: [{from_epoch, trainable_params}, ...]."""
    out = []
    for h in history:
        if "trainable_params" in h and (not out or out[-1]["trainable_params"] != h["trainable_params"]):
            out.append({"from_epoch": h["epoch"], "trainable_params": h["trainable_params"]})
    return out


def main(argv: list[str] | None = None) -> int:
    """`hf-medtl finetune`, also as a script (accelerate launch, python -m): the same parser (its --help lists every
    recipe key), then load and check the recipe, run it, and print the test line on the main process."""
    from hf_medtl.cli.common import FINETUNE_DESCRIPTION, parse_standalone

    parsed = parse_standalone("finetune.py", FINETUNE_DESCRIPTION, sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):  # --help or a usage error, already printed
        return parsed
    args, overrides = parsed
    setup_logging()

    def go() -> int:
        recipe = load_recipe(args.recipe, overrides)
        require_model(recipe, args.recipe)
        metrics = run(recipe)
        if recipe.training.process_index != 0:
            return 0
        test = metrics["test"]
        ci = test.get("ci", {}).get("accuracy")
        print(f"test accuracy {test['accuracy']:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "") +
              f", F1 macro {test['f1_macro']:.4f}; {metrics['epochs_run']} epochs, {metrics['lr_reductions']} LR "
              f"reductions; outputs in {recipe.training.output_dir}")
        return 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
