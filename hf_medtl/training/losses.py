"""The training objective, handed to the Trainer as ``compute_loss_func``: cross-entropy (class-weighted,
label-smoothed, or focal), sigmoid + BCE for multi-label, plus seed 001's feature regularisation
lambda1 ||h||_1 + lambda2 ||h||_2^2 on the head's representation h.

Normalisation follows the Trainer's contract: with ``num_items_in_batch`` (the labelled items of the whole
optimizer step, over every process and accumulation step) the loss is a sum divided by it; without it (an
evaluation batch) a mean. Class weights scale each image's term (sum of w_y CE / n, not PyTorch's weighted mean).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from hf_medtl.errors import HfMedtlError
from hf_medtl.models.modeling_medtl import feature_penalty


def balanced_class_weights(labels: list[int], n_classes: int) -> list[float]:
    """n / (K x n_c) per class c (scikit-learn's 'balanced'); a class absent from training gets 0."""
    counts = Counter(labels)
    n = len(labels)
    return [n / (n_classes * counts[c]) if counts[c] else 0.0 for c in range(n_classes)]


def resolve_class_weights(setting, train_labels, classes: list[str]) -> Optional[list[float]]:
    """The recipe's class_weights as one float per class (``train_labels``: class ids, or 0/1 rows for
    multi-label, where 'balanced' weighs each label's positives by n_negative / n_positive)."""
    if setting is None:
        return None
    if setting == "balanced":
        labels = train_labels
        if labels and isinstance(labels[0], (list, tuple)):
            pos = torch.tensor(labels, dtype=torch.float64).sum(0)
            return [float((len(labels) - p) / p) if p else 1.0 for p in pos]
        return balanced_class_weights(list(labels), len(classes))
    if len(setting) != len(classes):
        raise HfMedtlError(f"class_weights has {len(setting)} numbers but there are {len(classes)} classes "
                           f"({', '.join(classes)}); give one per class, in that order")
    if any(w < 0 for w in setting):
        raise HfMedtlError(f"class_weights must not be negative, got {setting}")
    return [float(w) for w in setting]


class ClassificationLoss:
    """compute_loss_func(outputs, labels, num_items_in_batch) -> loss. ``last`` holds the batch's terms
    (ce, l1, l2 as sums, and n) for the per-epoch log; ``observer(logits, labels)`` is told every training
    batch (the adaptive schedule's running accuracy, since the Trainer keeps labels from the forward)."""

    def __init__(self, class_weights: Optional[list[float]] = None, loss: str = "cross_entropy",
                 focal_gamma: float = 2.0, l1: float = 0.0, l2: float = 0.0, label_smoothing: float = 0.0,
                 multi_label: bool = False, observer: Optional[Callable] = None):
        self.weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss, self.gamma, self.l1, self.l2 = loss, focal_gamma, l1, l2
        self.label_smoothing, self.multi_label = label_smoothing, multi_label
        self.observer = observer
        self.totals: Optional[torch.Tensor] = None  # [ce, l1, l2, n] summed over this epoch's training batches

    def per_item(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The data term of each labelled item: (N,) for classes, (N, L) for multi-label."""
        logits = logits.float()
        w = self.weights.to(logits.device) if self.weights is not None else None
        if self.multi_label:
            labels = labels.float()
            ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none",
                                                    pos_weight=w)
            if self.loss == "focal":
                p_t = torch.where(labels > 0.5, torch.sigmoid(logits), 1 - torch.sigmoid(logits))
                ce = (1 - p_t) ** self.gamma * ce
            return ce
        if labels.ndim == 2:  # MixUp / CutMix: probability rows (hf_medtl.training.mixing)
            return self._soft(logits, labels.float(), w)
        ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        if self.loss == "focal":
            p_t = torch.softmax(logits, -1).gather(1, labels[:, None]).squeeze(1)
            ce = (1 - p_t) ** self.gamma * ce
        if w is not None:
            ce = ce * w[labels]
        return ce

    def _soft(self, logits: torch.Tensor, target: torch.Tensor, w) -> torch.Tensor:
        """The hard-label terms extended to a mixed label y (rows of class probabilities): cross-entropy against y
        (smoothed as a hard label is), p_t = sum p_c y_c for focal, and the class weight sum w_c y_c; each equals
        the hard-label term when y is one-hot."""
        ce = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing)
        if self.loss == "focal":
            p_t = (torch.softmax(logits, -1) * target).sum(1)
            ce = (1 - p_t) ** self.gamma * ce
        if w is not None:
            ce = ce * (target @ w)
        return ce

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        items = self.per_item(logits, labels)
        n = labels.shape[0]
        features = outputs.get("features") if hasattr(outputs, "get") else None
        penalties = (feature_penalty(features, self.l1, self.l2, "sum") if features is not None and (self.l1 or self.l2)
                     else (logits.new_zeros(()).float(), logits.new_zeros(()).float()))
        per_label = items.shape[1] if items.ndim == 2 else 1
        # Items the Trainer counted (labels.ne(-100)): images, or image x label for a multi-label or mixed label row.
        per_row = labels.shape[1] if labels.ndim == 2 else 1
        denominator = num_items_in_batch / per_row if num_items_in_batch is not None else n
        data = items.sum() / per_label
        loss = (data + penalties[0] + penalties[1]) / denominator
        if torch.is_grad_enabled():  # a training batch (evaluation runs under no_grad)
            with torch.no_grad():
                batch = torch.stack([data.detach().double(), penalties[0].detach().double(),
                                     penalties[1].detach().double(), torch.tensor(float(n), dtype=torch.float64,
                                                                                  device=logits.device)])
                self.totals = batch if self.totals is None else self.totals + batch
            if self.observer is not None and labels.ndim == 2 and not self.multi_label:
                self.observer(logits.detach(), labels, soft=True)
            elif self.observer is not None:
                self.observer(logits.detach(), labels)
        return loss

    def epoch_terms(self, sum_over_processes) -> dict:
        """This epoch's mean data loss and feature penalties per training image (over all processes); resets."""
        if self.totals is None:
            return {}
        ce, l1, l2, n = sum_over_processes(self.totals).tolist()
        self.totals = None
        return {"train_data_loss": ce / n, "train_l1_feature_reg": l1 / n, "train_l2_feature_reg": l2 / n}
