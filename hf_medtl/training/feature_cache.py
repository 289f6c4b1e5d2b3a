"""Cached backbone features: when the backbone stays frozen for the whole run and training images are not
augmented, its output is the same every epoch, so it is computed once per split, stored as a ``datasets``
Arrow table (keyed by the backbone's weights, the input size and the data) and reused across runs; the head
trains on it with the same Trainer and schedule. The head's parameters are shared with the full model, which is
what the run evaluates and saves.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from hf_medtl.models import MedtlForImageClassification, classifier_head
from hf_medtl.models.modeling_medtl import MedtlClassifierOutput, head_loss, medtl_head

logger = logging.getLogger("hf_medtl")
SPLITS = ("train", "validation", "test")


def applies(recipe) -> bool:
    d, m = recipe.data, recipe.model
    return d.cache_features and not d.augment and m.finetune_strategy == "linear_probe"


def _last_linear(model) -> nn.Linear:
    return [m for m in classifier_head(model).modules() if isinstance(m, nn.Linear)][-1]


class HeadOnly(nn.Module):
    """The full model's head (its own parameters, shared) applied to cached pooled features."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.medtl = isinstance(model, MedtlForImageClassification)
        if self.medtl:
            self.bottleneck, self.dropout, self.classifier = model.bottleneck, model.dropout, model.classifier
        else:
            self.classifier = _last_linear(model)

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
            _last_linear(model).register_forward_pre_hook(self._capture)

    def _capture(self, module, args):
        self.captured = args[0]

    def forward(self, pixel_values=None, labels=None, **kwargs):
        if isinstance(self.model, MedtlForImageClassification):
            z = self.model.backbone(pixel_values=pixel_values).logits
        else:
            self.model(pixel_values=pixel_values)
            z = self.captured.flatten(1)
        return ImageClassifierOutput(loss=z.new_zeros(()) if labels is not None else None, logits=z)


def fingerprint(model, processor, splits, split: str) -> str:
    """Backbone weights (head excluded), the serving processor (input size, mean, std) and the split's files
    with their pixel hashes (or size and mtime without the data check)."""
    h = hashlib.sha256()
    head = {id(p) for p in classifier_head(model).parameters()}
    for name, p in sorted(model.named_parameters()):
        if id(p) not in head:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(getattr(processor, "data_config", None) or processor.to_dict(), sort_keys=True,
                        default=str).encode())
    for i, s in enumerate(splits.samples):
        if splits.assignment[i] == split:
            sha = splits.shas[i] if splits.shas else None
            if sha is None and s.array is None:
                st = os.stat(s.path)
                sha = f"{st.st_size}:{st.st_mtime_ns}"
            h.update(f"{splits.relpath(s)}|{s.label}|{sha}\n".encode())
    return h.hexdigest()[:32]


def cache_root(data_args) -> Path:
    if data_args.feature_cache_dir:
        return Path(data_args.feature_cache_dir)
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hf_medtl" / "features"


def _compute(model, dataset, batch_size: int):
    from hf_medtl.training.trainer import inference_trainer

    out = inference_trainer(Features(model), batch_size).predict(dataset, metric_key_prefix="features")
    return out.predictions, out.label_ids


def cached_datasets(model, processor, datasets: dict, splits, recipe, main_process: bool = True) -> dict:
    """Per split, a dataset of (features, label): loaded from the cache, or computed once and stored."""
    import datasets as hf_datasets

    root, out = cache_root(recipe.data), {}
    for split in SPLITS:
        key = fingerprint(model, processor, splits, split)
        path = root / key
        if (path / "dataset_info.json").is_file():
            out[split] = hf_datasets.load_from_disk(str(path))
            logger.info(f"{split}: backbone features reused from {path}")
            continue
        feats, labels = _compute(model, datasets[split], recipe.training.per_device_eval_batch_size)
        table = hf_datasets.Dataset.from_dict({"features": feats.tolist(), "label": labels.tolist()})
        if main_process:
            tmp = path.with_name(key + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            table.save_to_disk(str(tmp))
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
            logger.info(f"{split}: backbone features of {len(table)} images computed once, stored in {path}")
        out[split] = table
    for split in out:  # 'labels': the collator stacks them as they are (class ids, or 0/1 rows)
        out[split] = out[split].rename_column("label", "labels").with_format("torch")
    out["train_eval"] = out["train"]
    return out
