"""The baseline: the recipe of transformers' `examples/pytorch/image-classification/run_image_classification.py`
(with its README's flags), on any shared dataset and any backbone the toolkit loads.

    python benchmarks/example_recipe.py --model_name_or_path DIR (--npz_file F | --data_dir D) [--image_size 128]
        [--epochs 5] [--learning_rate 1e-3] [--batch_size 32] [--seed 1] [--output_dir outputs/example]

What the example does, and so what this does: the Trainer with a linear LR decay, no warm-up, weight decay 0,
evaluation and a checkpoint every epoch, ``load_best_model_at_end`` on the evaluation loss; training transform
RandomResizedCrop(size) (scale 0.08-1) + RandomHorizontalFlip + ToTensor + Normalize (the backbone's mean/std),
evaluation Resize(size) + CenterCrop(size); a seeded random 85/15 train/validation split of the training
images (no grouping of duplicates). The backbone comes through the toolkit's ``models.load_backbone`` (the same
pretrained weights and new head as a toolkit run), images through the toolkit's decoder.

From the command line it pools an .npz's train (+ val) images, or a class-folder tree, splits them 85/15 and, when
the .npz has a test split, scores it. ``benchmarks/recipes_vs_example.py`` calls ``train_and_predict`` with the
very train / validation / test images it gives the toolkit's recipe.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class ImageList:
    """A torch dataset of (source, label id): decoded by the toolkit's rules, then ``transform``."""

    def __init__(self, items: list, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from hf_medtl.data.decode import decode

        source, label = self.items[i]
        return {"pixel_values": self.transform(decode(source)), "labels": int(label)}


def transforms(prep):
    """(train, eval) transforms exactly as the example builds them."""
    from torchvision.transforms import (CenterCrop, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                                        Resize, ToTensor)

    size = prep.size
    normalize = Normalize(mean=prep.mean, std=prep.std)
    train = Compose([RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), normalize])
    evaluation = Compose([Resize(size), CenterCrop(size), ToTensor(), normalize])
    return train, evaluation


def train_and_predict(train: list, validation: list, test: list, classes: list[str], model_name_or_path: str,
                      image_size: int, epochs: float, learning_rate: float, batch_size: int, seed: int,
                      output_dir: str | Path) -> dict:
    """Train with the example's recipe on ``train`` (items: (array or path, label id)), choose the best epoch on
    ``validation`` by loss, predict ``test``. Returns probabilities, labels and what it cost."""
    from hf_medtl import timings
    from hf_medtl.training.progress import EpochPhases

    with timings.phase("startup"):  # (no-ops when main imported them already)
        import torch
        from transformers import Trainer, TrainingArguments, set_seed
        from transformers.trainer_callback import PrinterCallback

        from hf_medtl.config.arguments import ModelArguments
        from hf_medtl.data import preprocessing_from_processor
        from hf_medtl.models import load_backbone
        from hf_medtl.inference.core import probabilities

    set_seed(seed)
    with timings.phase("model_load"):
        model, processor = load_backbone(ModelArguments(model_name_or_path=model_name_or_path), classes, image_size)
    with timings.phase("train_setup"):  # (the epochs are phases of their own: EpochPhases)
        train_tf, eval_tf = transforms(preprocessing_from_processor(processor))

        def collate(batch):
            return {"pixel_values": torch.stack([b["pixel_values"] for b in batch]),
                    "labels": torch.tensor([b["labels"] for b in batch])}

        def accuracy(p):
            return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

        args = TrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=batch_size, per_device_eval_batch_size=64,
            num_train_epochs=epochs, learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=0,
            weight_decay=0.0, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
            load_best_model_at_end=True, save_total_limit=1, remove_unused_columns=False, report_to="none",
            seed=seed, disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available(), save_only_model=True)
        # EpochPhases: the first and later epochs on the command's phase clock (benchmarks/phases.py), as hf_medtl's.
        trainer = Trainer(model=model, args=args, train_dataset=ImageList(train, train_tf),
                          eval_dataset=ImageList(validation, eval_tf), data_collator=collate,
                          compute_metrics=accuracy, callbacks=[EpochPhases()])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        out = trainer.train()
        train_s = time.perf_counter() - start
    with timings.phase("scoring"):
        pred = trainer.predict(ImageList(test, eval_tf))
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        best = min(evals, key=lambda h: h["eval_loss"]) if evals else {}
    with timings.phase("save"):
        for ckpt in Path(output_dir).glob("checkpoint-*"):  # the model is in memory; keep the disk clean
            import shutil

            shutil.rmtree(ckpt, ignore_errors=True)
    return {"probs": probabilities(logits), "labels": pred.label_ids, "train_runtime_s": out.metrics["train_runtime"],
            "wall_train_s": train_s, "best_epoch": best.get("epoch"), "epochs": epochs,
            "images_processed": int(round(epochs * len(train))),
            "history": [{k: h[k] for k in ("epoch", "eval_loss", "eval_accuracy") if k in h} for h in evals]}


def random_split(n: int, seed: int, val_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The example's split: a seeded random permutation, the last val_fraction for validation."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return order[n_val:], order[:n_val]


def _load(a) -> tuple[list, list, list[str]]:
    """(pool items, test items, class names) from an .npz or a class-folder tree."""
    if a.npz_file:
        z = np.load(a.npz_file)
        pool = [(img, int(lab)) for key in ("train", "val") if f"{key}_images" in z.files
                for img, lab in zip(z[f"{key}_images"], z[f"{key}_labels"].reshape(-1))]
        test = ([(img, int(lab)) for img, lab in zip(z["test_images"], z["test_labels"].reshape(-1))]
                if "test_images" in z.files else [])
        classes = a.class_names or [str(i) for i in range(1 + max(lab for _, lab in pool))]
        return pool, test, classes
    classes = sorted(p.name for p in Path(a.data_dir).iterdir() if p.is_dir())
    pool = [(str(f), c) for c, name in enumerate(classes) for f in sorted((Path(a.data_dir) / name).rglob("*"))
            if f.is_file()]
    return pool, [], classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--npz_file")
    p.add_argument("--data_dir")
    p.add_argument("--class_names", type=json.loads)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output_dir", default="outputs/example_recipe")
    a = p.parse_args(argv)
    if bool(a.npz_file) == bool(a.data_dir):
        p.error("give one of --npz_file and --data_dir")
    from hf_medtl import timings

    clock = timings.start(since_process_start=argv is None)  # a command of its own: from the process's start
    clock.claimed = True
    with timings.phase("startup"):  # the libraries train_and_predict imports
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from hf_medtl.models import load_backbone  # noqa: F401
    with timings.phase("data"):
        pool, test, classes = _load(a)
        tr, va = random_split(len(pool), a.seed)
    result = train_and_predict([pool[i] for i in tr], [pool[i] for i in va], test or [pool[i] for i in va], classes,
                               a.model_name_or_path, a.image_size, a.epochs, a.learning_rate, a.batch_size, a.seed,
                               a.output_dir)
    acc = float((result["probs"].argmax(1) == result["labels"]).mean())
    scored = "test" if test else "validation (no test split given)"
    summary = {"scored_on": scored, "accuracy": acc, "n": len(result["labels"]), "train": len(tr), "validation": len(va),
               **{k: result[k] for k in ("best_epoch", "epochs", "images_processed", "train_runtime_s", "history")}}
    Path(a.output_dir).mkdir(parents=True, exist_ok=True)
    with timings.phase("save"):
        summary["timings"] = clock.snapshot()
        (Path(a.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"example recipe: {scored} accuracy {acc:.4f} on {len(result['labels'])} images; best epoch "
          f"{result['best_epoch']}; {result['train_runtime_s']:.0f} s training")
    print(timings.row(clock.snapshot()))
    timings.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
