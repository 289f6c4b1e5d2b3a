"""Model card rendering and the optional push to the Hugging Face Hub."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

from hf_medtl.errors import HfMedtlError
from hf_medtl.report import HEADLINE, fmt

TEMPLATE = resources.files("hf_medtl.model_cards") / "image_classification.md"


def render_model_card(recipe, metrics: dict) -> str:
    test, r = metrics["test"], recipe.resolved
    rows = [f"| {label} | {fmt(key, test.get(key))} | {fmt(key, test['ci'][key][0])} – {fmt(key, test['ci'][key][1])} |"
            for key, label in HEADLINE if key in test.get("ci", {})]
    s = recipe.schedule
    schedule = (f"adaptive (Khoa & Tri, Algorithm 1): T={s.threshold}, p={s.patience}, P={s.stop_patience}, "
                f"φ={s.factor}, training accuracy '{s.train_accuracy}'") if s.adaptive_lr else "Trainer's own"
    counts = metrics["split_counts"]
    return Template(TEMPLATE.read_text()).substitute(
        model_name=Path(recipe.training.output_dir).name, base_model=r["model_name_or_path"],
        dataset=r["data_dir"] or f"{r['train_dir']} + {r['test_dir']}", n_classes=len(metrics["classes"]),
        classes=", ".join(metrics["classes"]), n_test=counts["test"], n_train=counts["train"],
        n_val=counts["validation"], n_bootstrap=test.get("n_bootstrap", 0), results_table="\n".join(rows),
        confusion_matrix="\n".join(" ".join(f"{v:5d}" for v in row) for row in test["confusion_matrix"]),
        split_seed=r["split_seed"] if r["split_seed"] is not None else recipe.training.seed,
        finetune_strategy=r["finetune_strategy"], image_size=r["image_size"] or "backbone default",
        learning_rate=recipe.training.learning_rate, batch_size=recipe.training.per_device_train_batch_size,
        max_epochs=recipe.training.num_train_epochs, schedule=schedule, epochs_run=metrics["epochs_run"],
        lr_reductions=metrics["lr_reductions"], best_epoch=metrics["best_epoch"])


def push(output_dir: Path, training_args) -> str:
    """Upload the run directory to ``hub_model_id`` (default: the directory's name)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo_id = training_args.hub_model_id or Path(output_dir).name
    api = HfApi(token=training_args.hub_token)
    try:
        repo = api.create_repo(repo_id, private=bool(training_args.hub_private_repo), exist_ok=True)
        api.upload_folder(repo_id=repo.repo_id, folder_path=str(output_dir), ignore_patterns=["training_args.bin"],
                          commit_message="hf_medtl fine-tuning run")
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError) as e:
        raise HfMedtlError(f"push_to_hub to '{repo_id}' failed ({str(e).splitlines()[0]}); the run's outputs are "
                           f"complete in {output_dir}: upload them later with `hf upload {repo_id} {output_dir}`") from None
    return repo.repo_id
