"""Image transforms. Evaluation is the saved image processor itself (hf_medtl.models.serving_processor), so
a saved model serves exactly what the run scored; training augments with the same size, interpolation,
mean and std, on the training split only."""
from __future__ import annotations

from dataclasses import dataclass

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    processor: object = None  # the serving processor: the evaluation transform


def preprocessing_from_processor(processor) -> Preprocessing:
    """Input size, interpolation, mean and std of a serving processor (HF or timm's TimmWrapper one)."""
    data_config = getattr(processor, "data_config", None)
    if data_config:  # timm: resolved from the checkpoint's pretrained_cfg
        size, mean, std = tuple(data_config["input_size"][1:]), data_config["mean"], data_config["std"]
        interpolation = data_config.get("interpolation") or "bicubic"
    else:
        size = (processor.size["height"], processor.size["width"])
        mean, std = processor.image_mean, processor.image_std
        interpolation = PIL_RESAMPLE.get(int(processor.resample), "bilinear")
    return Preprocessing(tuple(size), tuple(float(m) for m in mean), tuple(float(v) for v in std), interpolation,
                         processor)


class EvalTransform:
    """PIL image -> pixel tensor, exactly as ``pipeline("image-classification")`` prepares it. ``batch`` runs
    the processor once on a list of images (the same operations per image, without the per-call overhead,
    which at 128 px costs as much as the model's forward)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, img):
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]

    def batch(self, images: list) -> list:
        return list(self.processor(images=images, return_tensors="pt")["pixel_values"])


def eval_transform(processor) -> EvalTransform:
    return EvalTransform(processor)


def build_transforms(prep: Preprocessing, augment: bool = True, crop_scale_min: float = 0.8,
                     rotation_degrees: float = 10.0, hflip_prob: float = 0.5):
    """(train, eval) transforms. Eval resizes the whole image, never crops: a lesion may sit at the border."""
    from torchvision import transforms as T  # here, so that the data check runs without importing torch
    from torchvision.transforms import InterpolationMode

    evaluation = eval_transform(prep.processor)
    if not augment:
        return evaluation, evaluation
    mode = InterpolationMode(prep.interpolation)
    train = [T.RandomResizedCrop(prep.size, scale=(crop_scale_min, 1.0), interpolation=mode, antialias=True)
             if crop_scale_min < 1.0 else T.Resize(prep.size, interpolation=mode, antialias=True)]
    if rotation_degrees > 0:
        train.append(T.RandomRotation(rotation_degrees))
    if hflip_prob > 0:
        train.append(T.RandomHorizontalFlip(hflip_prob))
    return T.Compose(train + [T.ToTensor(), T.Normalize(prep.mean, prep.std)]), evaluation
