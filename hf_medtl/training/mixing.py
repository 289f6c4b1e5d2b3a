"""MixUp / CutMix of training batches (torchvision ``transforms.v2``), in the training dataloader's own collate
function: validation and test batches go through the plain collator, so evaluation never sees a mixed image.
Mixed labels are probability rows over the classes; hf_medtl's loss takes them (cross-entropy with soft targets)."""
from __future__ import annotations

from typing import Optional

import torch
from transformers import default_data_collator

from hf_medtl.errors import HfMedtlError


def is_mixing(data_args) -> bool:
    return getattr(data_args, "mixup_alpha", 0) > 0 or getattr(data_args, "cutmix_alpha", 0) > 0


class MixingCollator:
    """default_data_collator, then, with probability ``prob``, MixUp or CutMix (one of those whose alpha is above
    0, chosen at random per batch, as timm's Mixup switches). Every batch's labels come out as (N, classes) rows
    summing to 1 (one-hot when not mixed), so that the loss and the accuracy count see one kind of label."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0):
        from torchvision.transforms import v2

        self.num_classes, self.prob = num_classes, prob
        self.mixers = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
                      ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        if not self.mixers:
            raise ValueError("MixingCollator needs mixup_alpha or cutmix_alpha above 0")

    def __call__(self, features: list) -> dict:
        batch = default_data_collator(features)
        pixels, labels = batch["pixel_values"], batch["labels"]
        if labels.ndim != 1:
            raise HfMedtlError("MixUp / CutMix mix one class per image; multi-label data is not supported")
        # torch's global generator: seeded by the Trainer (and per worker by the DataLoader), so runs repeat.
        if self.prob >= 1.0 or torch.rand(()).item() < self.prob:
            mixer = self.mixers[int(torch.randint(len(self.mixers), ()).item())]
            pixels, labels = mixer(pixels, labels)
        else:
            labels = torch.nn.functional.one_hot(labels, self.num_classes).float()
        batch["pixel_values"], batch["labels"] = pixels, labels
        return batch


def train_collator(data_args, config) -> Optional[MixingCollator]:
    """The training batches' collator when the recipe mixes; None: the Trainer's own."""
    if not is_mixing(data_args):
        return None
    if getattr(config, "problem_type", None) == "multi_label_classification":
        key = "mixup_alpha" if data_args.mixup_alpha > 0 else "cutmix_alpha"
        raise HfMedtlError(f"'{key}' mixes single-label images; multi-label data is not supported")
    return MixingCollator(config.num_labels, data_args.mixup_alpha, data_args.cutmix_alpha, data_args.mixup_prob)
