"""Where cached backbone features live (hf_medtl.training.feature_cache), what an entry is keyed on, and how an
entry is written (complete, or absent) and read back (whole, or computed again)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from torch import nn

from hf_medtl.data.cache import content_key, decode_rules
from hf_medtl.data.cache_files import remove_abandoned, temporary_name, write_error
from hf_medtl.data.transforms import pixels_key
from hf_medtl.models import MedtlForImageClassification, classifier_head

logger = logging.getLogger("hf_medtl")
MARKER = "complete.json"  # written last: the entry's row count, file sizes and content checksums


def cache_root(data_args) -> Path:
    if data_args.feature_cache_dir:
        return Path(data_args.feature_cache_dir)
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hf_medtl" / "features"


def last_linear(model) -> nn.Linear:
    return [m for m in classifier_head(model).modules() if isinstance(m, nn.Linear)][-1]


def trained_head(model) -> nn.Module:
    """What trains on the cached features (hf_medtl's bottleneck + classifier, else the last linear layer):
    everything else in the model computes them."""
    return classifier_head(model) if isinstance(model, MedtlForImageClassification) else last_linear(model)


def fingerprint(model, processor, splits, split: str, batch_size: int | None = None) -> str:
    """Everything a split's features depend on: the model's class and full configuration (pooling, timm's
    pretrained_cfg and model args), its weights and buffers outside the trained head, the processor's pixels
    key, the decode rules, the library versions, the device and the batches (a convolution's kernel may change
    with the batch size, and so the last bits of its output), the classes, and each image of the split with its
    content (the data check's pixel hash, else a hash of the file's bytes: sizes and times can lie)."""
    import torch

    h = hashlib.sha256()
    # (the processor's pixels key holds the versions of torch, transformers and timm: the features' kernels too)
    settings = {"model": type(model).__name__, "config": model.config.to_dict(), "processor": pixels_key(processor),
                "decode": decode_rules(), "classes": list(splits.classes),
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "batches": [batch_size, os.environ.get("WORLD_SIZE", "1")],
                "multi_label": bool(getattr(splits, "multi_label", False))}
    h.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    head = trained_head(model)
    skip = {id(t) for t in [*head.parameters(), *head.buffers()]}
    tensors = sorted([*model.named_parameters(), *model.named_buffers()], key=lambda item: item[0])
    for name, t in tensors:
        if id(t) not in skip:
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for i, s in enumerate(splits.samples):
        if splits.assignment[i] == split:
            sha = (splits.shas[i] if splits.shas else None) or content_key(s.source)
            h.update(f"{splits.relpath(s)}|{s.label}|{sha}\n".encode())
    return h.hexdigest()[:32]


def file_sum(path: Path) -> str:
    """A file's content checksum (xxh3: a few GB/s, a small share of reading the features back)."""
    import xxhash  # (a dependency of datasets)

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_entry(path: Path, rows: int):
    """The table stored at ``path`` when it is whole (its marker present, its files the sizes and content written,
    ``rows`` rows); else None, after a log line and removing what was there, so that it is computed again: a
    flipped bit in a stored feature would otherwise change training silently (or make it NaN)."""
    import datasets

    if not path.exists():
        return None
    try:
        marker = json.loads((path / MARKER).read_text())
        sizes = {name: (path / name).stat().st_size for name in marker["files"]}
        if sizes != marker["files"] or marker["rows"] != rows:
            raise ValueError(f"{rows} rows and the written file sizes expected")
        if "sums" not in marker:  # written before entries had checksums: its content cannot be vouched for
            raise ValueError("no content checksums")
        damaged = [name for name, total in marker["sums"].items() if file_sum(path / name) != total]
        if damaged:
            raise ValueError(f"'{damaged[0]}' does not match its checksum: damaged")
        table = datasets.load_from_disk(str(path))
        if len(table) != rows:
            raise ValueError(f"{len(table)} rows, {rows} expected")
        return table
    except Exception as e:  # noqa: BLE001 (json, OS, Arrow and datasets errors alike: the entry is not usable)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        logger.warning(f"feature cache entry '{path}' is incomplete or unreadable ({reason}); computing it again")
        shutil.rmtree(path, ignore_errors=True)
        return None


def store_entry(table, path: Path) -> None:
    """Save ``table`` at ``path``: to a temporary sibling first, the marker last, then renamed. A failed write
    (a full disk) removes its files at once and stops the run in one line naming the folder and the setting."""
    root, tmp = path.parent, path.parent / temporary_name()
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_abandoned(root)
        table.save_to_disk(str(tmp))
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        sums = {name: file_sum(tmp / name) for name in files}
        (tmp / MARKER).write_text(json.dumps({"rows": len(table), "files": files, "sums": sums}))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, "feature cache", root, "feature_cache_dir", "cache_features false") from None
    try:
        os.replace(tmp, path)
    except OSError:  # another run stored the same features first (a folder is not replaced): its copy serves
        shutil.rmtree(tmp, ignore_errors=True)
