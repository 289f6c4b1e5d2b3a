"""finetune_strategy 'knn': no gradient training, a training procedure of its own. The frozen backbone's pooled features of train / validation /
test are computed once (through the feature cache when it applies), L2-normalised; k (and the metric, when null)
is chosen by validation accuracy; the saved model is hf_medtl's MedtlForImageClassification with the 'knn' head,
holding the training features and labels as buffers (hf_medtl/models/modeling_medtl.py ``knn_head``), so that
``pipeline()``, predict, ONNX and the app serve it like any other run's model.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from types import SimpleNamespace

import numpy as np
import torch

from hf_medtl.models.heads import ModelError, with_medtl_head
from hf_medtl.models.modeling_medtl import MedtlForImageClassification, knn_head, l2_normalise
from hf_medtl.training import feature_cache
from hf_medtl.training.memory import PeakMemory
from hf_medtl.training.record import TrainingRecord

logger = logging.getLogger("hf_medtl")
CANDIDATE_K = (1, 3, 5, 7, 11, 15, 21)
METRICS = ("cosine", "euclidean")


def knn_model(model, model_args) -> MedtlForImageClassification:
    """``model``'s backbone (its weights kept) under the 'knn' head, with an empty bank, frozen and in eval mode."""
    if isinstance(model, MedtlForImageClassification):
        config = copy.deepcopy(model.config)
        config.head = "knn"
        wrapped = MedtlForImageClassification(config)
        wrapped.backbone.load_state_dict(model.backbone.state_dict())
    else:  # a classifier: its last Linear removed, as for hf_medtl's other heads (timm's pretrained_cfg kept)
        wrapped = with_medtl_head(model, dataclasses.replace(model_args, head="knn"))
    wrapped.config.knn_weights = model_args.knn_weights
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return wrapped.eval()


def split_features(model, processor, datasets: dict, splits, recipe, main_process: bool) -> dict:
    """split -> (pooled features, labels) as numpy arrays: cached when the feature cache applies."""
    if feature_cache.applies(recipe):
        sets = feature_cache.cached_datasets(model, processor, datasets, splits, recipe, main_process)
        return {s: (sets[s][:]["features"].numpy(), sets[s][:]["labels"].numpy()) for s in feature_cache.SPLITS}
    batch = recipe.training.per_device_eval_batch_size
    return {s: feature_cache.compute_features(model, datasets[s], batch) for s in feature_cache.SPLITS}


def normalised(features) -> torch.Tensor:
    return l2_normalise(torch.as_tensor(np.asarray(features), dtype=torch.float32))


def accuracy(bank, bank_labels, features, labels, k: int, metric: str, weights: str, num_labels: int) -> float:
    config = SimpleNamespace(knn_k=k, knn_metric=metric, knn_weights=weights, num_labels=num_labels)
    with torch.no_grad():
        logits = knn_head(torch.as_tensor(np.asarray(features)), bank, bank_labels, config).logits
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())


def choose(bank, bank_labels, validation, model_args, num_labels: int) -> dict:
    """The (metric, k) of best validation accuracy (the first in order on a tie: cosine, then the smaller k),
    with every candidate's accuracy."""
    n = len(bank)
    ks = [model_args.knn_k] if model_args.knn_k else ([k for k in CANDIDATE_K if k <= n] or [n])
    metrics = [model_args.knn_metric] if model_args.knn_metric else list(METRICS)
    scores = {m: {str(k): accuracy(bank, bank_labels, *validation, k, m, model_args.knn_weights, num_labels)
                  for k in ks} for m in metrics}
    best = max(((m, k) for m in metrics for k in ks), key=lambda mk: (scores[mk[0]][str(mk[1])],
                                                                      -metrics.index(mk[0]), -mk[1]))
    return {"k": best[1], "metric": best[0], "weights": model_args.knn_weights, "bank_size": n,
            "validation_accuracy": scores[best[0]][str(best[1])], "candidates": scores}


def fit(model, processor, datasets: dict, splits, recipe, main_process: bool = True):
    """(the k-NN model: ``model``'s backbone with its bank filled and k chosen on validation, the record)."""
    start = time.perf_counter()
    if getattr(splits, "multi_label", False):
        raise ModelError("finetune_strategy 'knn' needs one class per image; this data is multi-label")
    memory = PeakMemory().start()  # its "training": the feature pass and the choice of k
    model = knn_model(model, recipe.model)
    feats = split_features(model, processor, datasets, splits, recipe, main_process)
    for split, (f, _) in feats.items():  # no loss to diverge: a NaN weight or buffer shows up only here
        bad = int((~np.isfinite(np.asarray(f)).all(axis=1)).sum()) if len(f) else 0
        if bad:
            raise ModelError(f"finetune_strategy 'knn': {bad} of {len(f)} {split} images have non-finite features "
                             f"(NaN/Inf) from '{recipe.model.model_name_or_path}'; its weights or BatchNorm buffers "
                             "hold non-finite values: use another checkpoint")
    bank, bank_labels = normalised(feats["train"][0]), torch.as_tensor(np.asarray(feats["train"][1]), dtype=torch.long)
    choice = choose(bank, bank_labels, feats["validation"], recipe.model, model.config.num_labels)
    model.knn_bank, model.knn_labels = bank, bank_labels
    model.config.knn_size, model.config.knn_k, model.config.knn_metric = len(bank), choice["k"], choice["metric"]
    logger.info(f"knn: k {choice['k']}, {choice['metric']} ({choice['weights']} vote) on {len(bank)} training images; "
                f"validation accuracy {choice['validation_accuracy']:.4f} (candidates: {choice['candidates']})")
    memory.stop()
    # No epochs and no budget: the choice of k is its record (metrics "knn").
    return model, TrainingRecord(train_metrics={"train_runtime": time.perf_counter() - start},
                                 memory=memory.record(), knn=choice)
