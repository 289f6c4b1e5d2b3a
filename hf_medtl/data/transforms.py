"""Image transforms. Evaluation is the saved image processor itself (hf_medtl.models.serving_processor), so
a saved model serves exactly what the run scored; training augments with the same size, interpolation,
mean and std, on the training split only.

The image cache stores an image after the processor's geometry (its resize and crop) and before its intensity
steps (to tensor, rescale, normalise): ``EvalTransform.prepare`` splits the processor there and keeps the split
only where finishing the stored copy gives the processor's own tensor bit for bit; the cached copy comes back
marked (``Prepared``) and ``EvalTransform`` then applies the intensity steps alone, so the geometry runs once,
as it does on the decoded file, whatever the processor crops."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata

from PIL import Image

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Libraries whose code computes a processor's pixels: a new version may round differently, so it gets new entries.
PIXEL_LIBRARIES = ("transformers", "torchvision", "torch", "pillow", "timm", "numpy")
_TO_TENSOR = {"ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor", "ToImage", "ToNumpy"}


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]  # (height, width) of the processor's output (nominal where it keeps the aspect ratio)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    processor: object = None  # the serving processor: the evaluation transform


def _hf_size(processor) -> tuple[int, int]:
    """An HF processor's output size: its crop when it centre-crops, else its resize target (shortest_edge:
    ConvNextImageProcessor crops or squashes to that square; others keep the aspect, and the square is nominal)."""
    crop = getattr(processor, "crop_size", None)
    dims = crop if getattr(processor, "do_center_crop", False) and crop else processor.size
    d = {k: v for k, v in dict(dims).items() if v}
    if "height" in d and "width" in d:
        return d["height"], d["width"]
    side = d.get("shortest_edge") or d.get("longest_edge") or max(d.get("max_height", 0), d.get("max_width", 0))
    return side, side


def preprocessing_from_processor(processor) -> Preprocessing:
    """Input size, interpolation, mean and std of a serving processor (HF or timm's TimmWrapper one)."""
    data_config = getattr(processor, "data_config", None)
    if data_config:  # timm: resolved from the checkpoint's pretrained_cfg
        size, mean, std = tuple(data_config["input_size"][1:]), data_config["mean"], data_config["std"]
        interpolation = data_config.get("interpolation") or "bicubic"
    else:
        size = _hf_size(processor)
        mean, std = processor.image_mean, processor.image_std
        interpolation = PIL_RESAMPLE.get(int(processor.resample), "bilinear")
    return Preprocessing(tuple(size), tuple(float(m) for m in mean), tuple(float(v) for v in std), interpolation,
                         processor)


def pixels_key(processor) -> str:
    """A digest of everything that decides the processor's pixels: its class, every setting, its transforms
    (timm) and the versions of the libraries that compute them."""
    versions = {}
    for name in PIXEL_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    what = [type(processor).__module__, type(processor).__name__, processor.to_dict(),
            repr(getattr(processor, "val_transforms", None)), versions]
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()


class Prepared(Image.Image):
    """A cached copy that already went through the geometry of the processor whose pixels_key it carries."""

    pixels_key = ""


def mark_prepared(img: Image.Image, key: str) -> Prepared:
    img.__class__ = Prepared  # PIL's own operations return plain images: a resized copy is no longer marked
    img.pixels_key = key
    return img


def _tensor_step(steps) -> int | None:
    """Where timm's eval Compose turns the PIL image into a tensor (what comes before is geometry)."""
    names = [type(t).__name__ for t in steps.transforms]
    return next((i for i, n in enumerate(names) if n in _TO_TENSOR), None)


class EvalTransform:
    """PIL image -> pixel tensor, exactly as ``pipeline("image-classification")`` prepares it. ``batch`` runs
    the processor once on a list of images (the same operations per image, without the per-call overhead,
    which at 128 px costs as much as the model's forward). A ``Prepared`` image gets the intensity steps only."""

    def __init__(self, processor):
        self.processor = processor
        self._key = None

    @property
    def pixels_key(self) -> str:
        if self._key is None:
            self._key = pixels_key(self.processor)
        return self._key

    def __call__(self, img):
        if isinstance(img, Prepared):
            return self.finish([img])[0]
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]

    def batch(self, images: list) -> list:
        prepared = sum(isinstance(im, Prepared) for im in images)
        if prepared == 0:
            return list(self.processor(images=images, return_tensors="pt")["pixel_values"])
        if prepared < len(images):  # a dataset reads one kind; a mixed list is rare enough to go one by one
            return [self(im) for im in images]
        return self.finish(images)

    def geometry(self, img: Image.Image) -> Image.Image | None:
        """The processor's resize and crop alone, as an 8-bit RGB image; None where they cannot be separated."""
        steps = getattr(self.processor, "val_transforms", None)
        if steps is not None:  # timm: the PIL transforms before the conversion to a tensor
            at = _tensor_step(steps)
            return None if at is None else _compose(steps.transforms[:at])(img)
        try:  # HF: the processor with rescale and normalise off (and padding, which comes after them)
            out = self.processor(images=img, do_rescale=False, do_normalize=False, do_pad=False,
                                 return_tensors="pt")["pixel_values"][0]
        except (TypeError, ValueError):
            return None
        if str(out.dtype) != "torch.uint8" or out.ndim != 3 or out.shape[0] != 3:
            return None
        return Image.fromarray(out.permute(1, 2, 0).numpy(), "RGB")

    def finish(self, images: list) -> list:
        """The processor's steps after its geometry, on images ``geometry`` made."""
        for im in images:
            if isinstance(im, Prepared) and im.pixels_key != self.pixels_key:
                raise ValueError("an image cache copy made for another processor reached this one")
        steps = getattr(self.processor, "val_transforms", None)
        if steps is not None:
            rest = _compose(steps.transforms[_tensor_step(steps):])
            return [rest(im) for im in images]
        return list(self.processor(images=images, do_resize=False, do_center_crop=False,
                                   return_tensors="pt")["pixel_values"])

    def prepare(self, img: Image.Image) -> tuple[Image.Image, bool]:
        """(the copy the image cache stores for ``img``, whether it is prepared). Checked on every image:
        prepared only where finishing it equals the processor's tensor of ``img`` bit for bit; otherwise the
        decoded image itself, which the processor then transforms whole."""
        import torch

        geo = self.geometry(img)
        if geo is not None and geo.mode == "RGB" and torch.equal(self.finish([geo])[0], self(img)):
            return geo, True
        return img, False


def _compose(steps):
    from torchvision import transforms as T

    return T.Compose(list(steps))


def eval_transform(processor) -> EvalTransform:
    return EvalTransform(processor)


def build_transforms(prep: Preprocessing, augment: bool = True, crop_scale_min: float = 0.8,
                     rotation_degrees: float = 10.0, hflip_prob: float = 0.5, auto_augment: str | None = None,
                     rand_augment_magnitude: int = 9):
    """(train, eval) transforms. Eval is the processor (the serving one squashes the whole image, never crops:
    a lesion may sit at the border). ``auto_augment`` ('trivial', 'rand') adds TrivialAugmentWide / RandAugment
    to training only, on the PIL image after the flip."""
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
    if auto_augment is not None:
        train.append(_auto_augment(auto_augment, rand_augment_magnitude, mode))
    return T.Compose(train + [T.ToTensor(), T.Normalize(prep.mean, prep.std)]), evaluation


def _auto_augment(policy: str, magnitude: int, mode):
    """The policy as a transform on the PIL image (RGB: a grey medical image is loaded as RGB, so the colour ops
    act on all three channels alike). Its geometric ops resample with the model's interpolation."""
    from torchvision.transforms import v2

    if policy == "trivial":
        return v2.TrivialAugmentWide(interpolation=mode)
    if policy == "rand":
        return v2.RandAugment(num_ops=2, magnitude=magnitude, interpolation=mode)
    raise ValueError(f"auto_augment must be 'trivial', 'rand' or null, got {policy!r}")
