"""What hf_medtl costs on top of the model: training throughput (images/s) of the same model on the same decoded,
augmented images, batch and precision, in three harnesses measured in this one process, interleaved and
repeated (median of the repeats):

- plain:   a hand-written PyTorch loop (DataLoader, AdamW, cross-entropy);
- trainer: a bare transformers Trainer (no callbacks, no evaluation);
- hf_medtl: the Trainer as hf_medtl builds it (the adaptive-schedule callback with its running-accuracy
  forward hook, the rank-aware logging), same data and arguments.

Only steps after the first two of each pass are timed (warm-up), so start-up and evaluation do not count.

    python benchmarks/overhead.py [checkpoints/efficientnet_lite0] [data/brain_mri_sample] [--size 128] [--steps 12]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator


class StepClock(TrainerCallback):
    """Wall time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.steps, self.end = self.steps + 1, time.perf_counter()  # the epoch-end evaluation is not counted

    def rate(self, batch: int) -> float:
        return self.steps * batch / (self.end - self.start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", nargs="?", default="checkpoints/efficientnet_lite0")
    parser.add_argument("data_dir", nargs="?", default="data/brain_mri_sample")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per pass (after 2 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="also time hf_medtl with torch_compile true (steps after the warm-up: compilation excluded)")
    a = parser.parse_args()

    from hf_medtl import data, models

    from hf_medtl.training import trainer as train
    from hf_medtl.console import setup_logging
    from hf_medtl.config.recipe import load_recipe

    setup_logging()
    warmup, n = 2, a.batch * (a.steps + 2)
    recipe_path = Path("/tmp/hf_medtl_overhead.json")
    recipe_path.write_text(json.dumps(dict(
        model_name_or_path=a.checkpoint, data_dir=a.data_dir, image_size=a.size, per_device_train_batch_size=a.batch,
        num_train_epochs=1, output_dir="/tmp/hf_medtl_overhead", dedupe=False, val_ratio=0.05, test_ratio=0.05, seed=0)))
    recipe = load_recipe(recipe_path)
    splits = data.load_splits(recipe.data, 0)
    model, processor = models.load_backbone(recipe.model, splits.classes, a.size)
    ds = data.to_datasets(splits, data.preprocessing_from_processor(processor), recipe.data)["train"]
    ds = ds.select([i % len(ds) for i in range(n)])  # enough images for warm-up + timed steps in one epoch
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(output_dir="/tmp/hf_medtl_overhead", per_device_train_batch_size=a.batch,
                             num_train_epochs=1, learning_rate=1e-3, report_to="none", save_strategy="no",
                             eval_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
                             remove_unused_columns=False, dataloader_pin_memory=False, lr_scheduler_type="constant")

    def plain():
        model.load_state_dict(initial)
        model.train()
        loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, collate_fn=default_data_collator)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        for step, batch in enumerate(loader, 1):
            if step == warmup + 1:
                start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (step - warmup) * a.batch / (time.perf_counter() - start)

    def bare():
        model.load_state_dict(initial)
        clock = StepClock(warmup)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator,
                callbacks=[clock]).train()
        return clock.rate(a.batch)

    def ours(compiled: bool = False):
        model.load_state_dict(initial)
        clock = StepClock(warmup)
        run_recipe = load_recipe(recipe_path, ["--eval_strategy", "epoch", "--torch_compile", str(compiled).lower()])
        trainer, _ = train.build_trainer(model, processor, {"train": ds, "validation": ds.select(range(a.batch)),
                                                            "train_eval": ds}, run_recipe)
        trainer.add_callback(clock)
        trainer.train()
        return clock.rate(a.batch)

    harnesses = [("plain", plain), ("trainer", bare), ("hf_medtl", ours)]
    if a.compile:
        harnesses.append(("hf_medtl+compile", lambda: ours(True)))
    rates = {name: [] for name, _ in harnesses}
    for _ in range(a.repeats):
        for name, fn in harnesses:
            rates[name].append(fn())
            print(f"{name}: {rates[name][-1]:.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nmedian of {a.repeats}, {a.size} px, batch {a.batch}, {a.steps} timed steps, "
          f"{torch.get_num_threads()} threads:")
    for k, v in med.items():
        print(f"  {k:16s} {v:6.1f} img/s")
    print(f"  hf_medtl / bare Trainer = {med['hf_medtl'] / med['trainer']:.3f};  "
          f"hf_medtl / plain loop = {med['hf_medtl'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
