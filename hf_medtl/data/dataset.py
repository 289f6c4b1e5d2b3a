"""``datasets.Dataset`` construction: (pixel_values, labels) decoded by the toolkit's rules (once, through the
image cache, by default), transformed lazily."""
from __future__ import annotations

import contextlib
import logging
import time

from hf_medtl import timings
from hf_medtl.data import cache
from hf_medtl.data.cache import content_key
from hf_medtl.data.decode import decode
from hf_medtl.data.multilabel import label_set
from hf_medtl.data.transforms import Preprocessing, build_transforms
from hf_medtl.data.types import Sample

logger = logging.getLogger("hf_medtl")


def image_dataset(samples: list[Sample], classes: list[str], transform, max_pixels: int | None = None,
                  labels: list | None = None, load=None):
    """A ``datasets.Dataset`` of (pixel_values, labels), transformed lazily. ``load(i)``: sample i's decoded
    image (default: hf_medtl.data.decode of its source; the image cache passes its own). ``labels``: one label
    per sample to use instead of the class id (e.g. a 0/1 row per finding, multi-label)."""
    import datasets

    if labels is None:
        label_id = {c: i for i, c in enumerate(classes)}
        labels = [label_id[s.label] for s in samples]
    if load is None:
        def load(i):
            return decode(samples[i].source, max_pixels)
    ds = datasets.Dataset.from_dict({"index": list(range(len(samples))), "label": labels})
    if hasattr(transform, "batch"):  # the evaluation processor: one call per batch of images
        ds.set_transform(lambda batch: {"pixel_values": transform.batch([load(i) for i in batch["index"]]),
                                        "labels": batch["label"]})
    else:
        ds.set_transform(lambda batch: {"pixel_values": [transform(load(i)) for i in batch["index"]],
                                        "labels": batch["label"]})
    return ds


def multilabel_dataset(samples: list[Sample], classes: list[str], transform, max_pixels: int | None = None,
                       load=None):
    """data.image_dataset with a 0/1 float row per image (one column per finding) as its labels."""
    rows = [[1.0 if c in label_set(s) else 0.0 for c in classes] for s in samples]
    return image_dataset(samples, classes, transform, max_pixels, labels=rows, load=load)


def cached_loaders(samples: list[Sample], keys: list[str], prep: Preprocessing, cache_dir=None,
                   max_pixels: int | None = None, crop_scale_min: float | None = None, train_samples=()):
    """(eval load, train load) reading sample i of ``samples`` from the image cache in ``cache_dir`` (default
    hf_medtl.data.cache.default_dir()), built first for whatever is missing. train load: None unless
    ``crop_scale_min`` is given (augmenting); then ``train_samples`` also get the larger copy to crop from."""
    root, start = cache.default_dir(cache_dir), time.perf_counter()
    sources = [s.source for s in samples]
    eval_cache, built = cache.build(keys, sources, cache.eval_variant(prep), root, max_pixels,
                                    processor=prep.processor)
    train_cache, entries = None, len(keys)
    if crop_scale_min is not None:
        wanted = {id(s) for s in train_samples}
        idx = [i for i, s in enumerate(samples) if id(s) in wanted]
        variant = cache.Variant("train", prep.size, prep.interpolation, crop_scale_min)
        train_cache, n = cache.build([keys[i] for i in idx], [sources[i] for i in idx], variant, root, max_pixels)
        built, entries = built + n, entries + len(idx)
    logger.info(f"image cache {root}: {built:,} of {entries:,} copies decoded now "
                f"({time.perf_counter() - start:.1f} s), the rest reused")
    eval_load = lambda i: eval_cache.image(keys[i])  # noqa: E731
    train_load = (lambda i: train_cache.image(keys[i])) if train_cache is not None else None  # noqa: E731
    return eval_load, train_load


def sample_keys(samples: list[Sample], shas: list | None = None) -> list[str]:
    """Cache keys: the data check's pixel hashes, or each file's content hash where there is none."""
    shas = shas or [None] * len(samples)
    return [f"px:{sha}" if sha else content_key(s.source) for s, sha in zip(samples, shas)]


def to_datasets(splits, prep: Preprocessing, data_args, first=contextlib.nullcontext) -> dict:
    """A dataset per split, plus ``train_eval``: the training images without augmentation. ``first``: a
    context in which the image cache is built (the main process first, so the others only read it)."""
    with timings.phase("image_cache"):
        return _to_datasets(splits, prep, data_args, first)


def _to_datasets(splits, prep: Preprocessing, data_args, first) -> dict:
    train_tf, eval_tf = build_transforms(prep, data_args.augment, data_args.crop_scale_min,
                                         data_args.rotation_degrees, data_args.hflip_prob, data_args.auto_augment,
                                         data_args.rand_augment_magnitude)
    pixels = data_args.max_image_pixels
    make = multilabel_dataset if splits.multi_label else image_dataset
    parts = {split: splits.files(split) for split in ("train", "validation", "test")}
    loads = {split: (None, None) for split in parts}
    if data_args.data_cache:
        used = [i for i, a in enumerate(splits.assignment) if a in parts]
        samples = [splits.samples[i] for i in used]
        keys = sample_keys(samples, [splits.shas[i] for i in used] if splits.shas else None)
        with first():
            eval_load, train_load = cached_loaders(samples, keys, prep, data_args.data_cache_dir, pixels,
                                                   data_args.crop_scale_min if data_args.augment else None,
                                                   parts["train"])
        position = {id(s): i for i, s in enumerate(samples)}
        for split, files in parts.items():
            at = [position[id(s)] for s in files]
            loads[split] = (lambda i, at=at: eval_load(at[i]),
                            (lambda i, at=at: train_load(at[i])) if train_load else None)
    return {"train": make(parts["train"], splits.classes, train_tf, pixels, load=loads["train"][1] or loads["train"][0]),
            "train_eval": make(parts["train"], splits.classes, eval_tf, pixels, load=loads["train"][0]),
            "validation": make(parts["validation"], splits.classes, eval_tf, pixels, load=loads["validation"][0]),
            "test": make(parts["test"], splits.classes, eval_tf, pixels, load=loads["test"][0])}
