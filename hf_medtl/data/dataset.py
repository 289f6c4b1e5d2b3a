"""``datasets.Dataset`` construction: (pixel_values, labels) decoded by the toolkit's rules, transformed lazily."""
from __future__ import annotations

from hf_medtl.data.decode import decode
from hf_medtl.data.sources import Sample
from hf_medtl.data.transforms import Preprocessing, build_transforms


def image_dataset(samples: list[Sample], classes: list[str], transform, max_pixels: int | None = None,
                  labels: list | None = None):
    """A ``datasets.Dataset`` of (pixel_values, labels), decoded (hf_medtl.data.decode) and transformed lazily.
    ``labels``: one label per sample to use instead of the class id (e.g. a 0/1 row per finding, multi-label)."""
    import datasets

    if labels is None:
        label_id = {c: i for i, c in enumerate(classes)}
        labels = [label_id[s.label] for s in samples]
    ds = datasets.Dataset.from_dict({"index": list(range(len(samples))), "label": labels})
    ds.set_transform(lambda batch: {"pixel_values": [transform(decode(samples[i].source, max_pixels))
                                                     for i in batch["index"]],
                                    "labels": batch["label"]})
    return ds


def to_datasets(splits, prep: Preprocessing, data_args) -> dict:
    """A dataset per split, plus ``train_eval``: the training images without augmentation."""
    train_tf, eval_tf = build_transforms(prep, data_args.augment, data_args.crop_scale_min,
                                         data_args.rotation_degrees, data_args.hflip_prob)
    train, pixels = splits.files("train"), data_args.max_image_pixels
    make = image_dataset
    if getattr(splits, "multi_label", False):
        from hf_medtl.data.multilabel import multilabel_dataset as make
    return {"train": make(train, splits.classes, train_tf, pixels),
            "train_eval": make(train, splits.classes, eval_tf, pixels),
            "validation": make(splits.files("validation"), splits.classes, eval_tf, pixels),
            "test": make(splits.files("test"), splits.classes, eval_tf, pixels)}
