"""Cached backbone features: when the backbone stays frozen for the whole run and training images are not
augmented, its output is the same every epoch, so it is computed once per split, stored as a ``datasets``
Arrow table (keyed by everything that decides the features: hf_medtl.training.feature_store) and reused across
runs (an entry found incomplete is computed again); the head
trains on it with the same Trainer and schedule. The head's parameters are shared with the full model, which is
what the run evaluates and saves.
"""
from __future__ import annotations

import logging

from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from hf_medtl.models import MedtlForImageClassification
from hf_medtl.models.modeling_medtl import MedtlClassifierOutput, head_loss, medtl_head
from hf_medtl.training.feature_store import cache_root, fingerprint, last_linear, load_entry, store_entry

logger = logging.getLogger("hf_medtl")
SPLITS = ("train", "validation", "test")


def applies(recipe) -> bool:
    d, m = recipe.data, recipe.model
    return d.cache_features and not d.augment and m.finetune_strategy in ("linear_probe", "knn")


class HeadOnly(nn.Module):
    """The full model's head (its own parameters, shared) applied to cached pooled features."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.medtl = isinstance(model, MedtlForImageClassification)
        if self.medtl:
            self.bottleneck, self.dropout, self.classifier = model.bottleneck, model.dropout, model.classifier
        else:
            self.classifier = last_linear(model)

    def forward(self, features=None, labels=None, **kwargs):
        if self.medtl:
            return medtl_head(self, features, labels)
        logits = self.classifier(features)
        loss = head_loss(logits, labels, self.config.problem_type) if labels is not None else None
        return MedtlClassifierOutput(loss=loss, logits=logits, features=features)


class Features(nn.Module):
    """The full model up to its head: pooled features as 'logits' (for the Trainer's predict)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.captured = model, None
        if not isinstance(model, MedtlForImageClassification):
            last_linear(model).register_forward_pre_hook(self._capture)

    def _capture(self, module, args):
        self.captured = args[0]

    def forward(self, pixel_values=None, labels=None, **kwargs):
        if isinstance(self.model, MedtlForImageClassification):
            z = self.model.backbone(pixel_values=pixel_values).logits
        else:
            self.model(pixel_values=pixel_values)
            z = self.captured.flatten(1)
        return ImageClassifierOutput(loss=z.new_zeros(()) if labels is not None else None, logits=z)


def compute_features(model, dataset, batch_size: int):
    """(pooled features, labels) of ``dataset``'s images as numpy arrays: ``model`` up to its head, computed now."""
    from hf_medtl.training.trainer import inference_trainer

    out = inference_trainer(Features(model), batch_size).predict(dataset, metric_key_prefix="features")
    return out.predictions, out.label_ids


def cached_datasets(model, processor, datasets: dict, splits, recipe, main_process: bool = True) -> dict:
    """Per split, a dataset of (features, label): loaded from the cache, or computed once and stored."""
    import datasets as hf_datasets

    root, out, batch = cache_root(recipe.data), {}, recipe.training.per_device_eval_batch_size
    for split in SPLITS:
        path = root / fingerprint(model, processor, splits, split, batch)
        out[split] = load_entry(path, len(datasets[split]))
        if out[split] is not None:
            logger.info(f"{split}: backbone features reused from {path}")
            continue
        feats, labels = compute_features(model, datasets[split], batch)
        out[split] = hf_datasets.Dataset.from_dict({"features": feats.tolist(), "label": labels.tolist()})
        if main_process:
            store_entry(out[split], path)
            logger.info(f"{split}: backbone features of {len(out[split])} images computed once, stored in {path}")
    for split in out:  # 'labels': the collator stacks them as they are (class ids, or 0/1 rows)
        out[split] = out[split].rename_column("label", "labels").with_format("torch")
    out["train_eval"] = out["train"]
    return out
