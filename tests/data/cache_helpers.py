"""Shared by the cache tests (tests/data/test_cache*.py, tests/training/test_feature_cache.py): a timm backbone whose
features depend on the pixels, a spy on the probability tables, and a disk that fills up."""
import os

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def live_timm(tmp_path_factory, tiny_timm):
    """tiny_timm with timm's own initialisation of the backbone: the wrapper's leaves the untrained backbone's
    features near 1e-14 whatever the pixels, and a comparison of scores would see nothing."""
    import timm
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_timm)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        own = timm.create_model("test_efficientnet").state_dict()
    model.timm_model.load_state_dict({k: v for k, v in own.items() if not k.startswith("classifier")}, strict=False)
    out = tmp_path_factory.mktemp("live_timm")
    model.save_pretrained(out)
    return out


@pytest.fixture
def scored(monkeypatch):
    """Every probability table a run or evaluate writes, at full precision (the CSVs round to 6 digits)."""
    from hf_medtl.evaluation import report

    seen, write = [], report.write_predictions

    def spy(path, names, labels, probs, classes):
        seen.append((path.name, list(names), np.array(probs, dtype=np.float64)))
        return write(path, names, labels, probs, classes)

    monkeypatch.setattr(report, "write_predictions", spy)
    return seen


def same_tables(a, b, what):
    assert [(n, names) for n, names, _ in a] == [(n, names) for n, names, _ in b], what
    for (name, _, p), (_, _, q) in zip(a, b):
        assert p.tobytes() == q.tobytes(), f"{what}: {name} differs by up to {np.abs(p - q).max():.3g}"


def full_disk(monkeypatch, under):
    """Every ``datasets`` save below ``under`` writes part of its first file, then finds the disk full."""
    import errno

    import datasets

    save = datasets.Dataset.save_to_disk

    def failing(self, dataset_path, *args, **kwargs):
        if not str(dataset_path).startswith(str(under)):
            return save(self, dataset_path, *args, **kwargs)
        os.makedirs(dataset_path, exist_ok=True)
        with open(os.path.join(dataset_path, "data-00000-of-00001.arrow"), "wb") as f:
            f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", failing)
