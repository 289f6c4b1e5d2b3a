"""Image transforms: size and normalisation from the backbone's image processor, augmentation on train only."""
from __future__ import annotations

from dataclasses import dataclass

from torchvision import transforms as T


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def preprocessing_from_processor(processor, image_size: int | None = None) -> Preprocessing:
    """Read input size, mean and std from an HF image processor or timm's (TimmWrapper) one."""
    data_config = getattr(processor, "data_config", None)
    if data_config:  # timm: resolved from the checkpoint's pretrained_cfg
        size, mean, std = tuple(data_config["input_size"][1:]), data_config["mean"], data_config["std"]
    else:
        mean, std = processor.image_mean, processor.image_std
        s = dict(getattr(processor, "crop_size", None) or {}) or dict(processor.size)
        if "height" in s:
            size = (s["height"], s["width"])
        else:
            size = (s.get("shortest_edge") or s["longest_edge"],) * 2
    if image_size:
        size = (image_size, image_size)
    return Preprocessing(tuple(size), tuple(float(m) for m in mean), tuple(float(v) for v in std))


def build_transforms(prep: Preprocessing, augment: bool = True, crop_scale_min: float = 0.8,
                     rotation_degrees: float = 10.0, hflip_prob: float = 0.5) -> tuple[T.Compose, T.Compose]:
    """(train, eval) transforms. Eval resizes the whole image, never crops: a lesion may sit at the border."""
    to_tensor = [T.ToTensor(), T.Normalize(prep.mean, prep.std)]
    evaluation = T.Compose([T.Resize(prep.size, antialias=True), *to_tensor])
    if not augment:
        return evaluation, evaluation
    train = [T.RandomResizedCrop(prep.size, scale=(crop_scale_min, 1.0), antialias=True)
             if crop_scale_min < 1.0 else T.Resize(prep.size, antialias=True)]
    if rotation_degrees > 0:
        train.append(T.RandomRotation(rotation_degrees))
    if hflip_prob > 0:
        train.append(T.RandomHorizontalFlip(hflip_prob))
    return T.Compose(train + to_tensor), evaluation
