"""The one inference path: images or datasets in, class probabilities out, with test-time augmentation (TTA)
defined once. The run's own validation/test scoring, `hf-medtl evaluate`, `predict`, the app, the ONNX export's
check and Grad-CAM all go through here, so that whatever serves a saved model sees the pixels and the
probabilities that were evaluated.

A TTA view is an operation on the normalised pixel tensor (after the saved processor), never on the decoded
image: the same function serves a dataset batch and an uploaded file. Rotations fill the corners with the
normalised value of black, as a rotated image with black corners would give.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hf_medtl.errors import HfMedtlError
from hf_medtl.training.trainer import inference_trainer  # noqa: F401  (the Trainer that only predicts)

# The views --tta averages over; the training augmentation flips horizontally and rotates by a few degrees.
TTA_VIEWS = ("identity", "hflip", "rotate+10", "rotate-10")
# The views of each `tta` recipe value: what a run's reported metrics averaged over.
RUN_TTA_VIEWS = {"none": ("identity",), "hflip": ("identity", "hflip")}


# config.json's key for the views hf_medtl's serving averages over around a standard transformers model (plain
# transformers ignores it and serves the model alone); a model with the views inside its forward says ``views``.
TTA_KEY = "tta_views"


def record_views(model, views) -> None:
    """Write the run's TTA ``views`` into the model's config (saved in config.json), or remove a stale entry (a
    model fine-tuned from a saved run carries that run's)."""
    if len(views) > 1:
        setattr(model.config, TTA_KEY, list(views))
    elif hasattr(model.config, TTA_KEY):
        delattr(model.config, TTA_KEY)


def views_outside_of(model, views) -> tuple[str, ...]:
    """The views to apply around ``model``: none when it already averages over them inside its forward."""
    return ("identity",) if getattr(model, "serve_views", False) and len(model.config.views) > 1 else tuple(views)


def run_tta_views(model_dir: str | Path) -> tuple[str, ...]:
    """The views a saved run's validation and test metrics averaged over, so that what serves it sees what was
    evaluated: config.json's ``tta_views`` (a standard model: the views hf_medtl applies around it) or ``views`` (a
    model that averages over them inside its forward: `tta_inside`, ensembles), else its recipe.json's `tta` (runs
    saved before either); ("identity",) for a model saved by anything else."""
    model_dir = Path(model_dir)
    config, recipe = model_dir / "config.json", model_dir / "recipe.json"
    try:
        saved = json.loads(config.read_text()) if config.is_file() else {}
        views = saved.get(TTA_KEY) or saved.get("views")
        if views:
            return tuple(views)
        tta = json.loads(recipe.read_text()).get("tta", "none") if recipe.is_file() else "none"
    except (OSError, ValueError) as e:
        bad = recipe if recipe.is_file() else config
        raise HfMedtlError(f"{bad}: unreadable ({e}); restore it from the run or delete it") from None
    if tta not in RUN_TTA_VIEWS:
        raise HfMedtlError(f"{recipe}: tta '{tta}' unknown; use one of {', '.join(RUN_TTA_VIEWS)}")
    return RUN_TTA_VIEWS[tta]


def views_outside(model):
    """``model`` with the views it serves inside its forward switched off, for the toolkit's own serving, which
    applies the views asked for (the run's, --tta's or none) around it: the same probabilities for the run's views
    (a mean over the same forward passes), and --no_tta then really scores the image alone."""
    if hasattr(model, "serve_views"):
        model.serve_views = False
    return model


@contextmanager
def views_off(model):
    """Within the block, ``model`` (a model that may serve views inside its forward) runs on the image alone;
    afterwards it serves as before. The one place the switch is flipped and restored (Grad-CAM of such a model)."""
    before = getattr(model, "serve_views", None)
    views_outside(model)
    try:
        yield model
    finally:
        if before is not None:
            model.serve_views = before


def views_of(tta) -> tuple[str, ...]:
    """``tta`` as a tuple of view names: True -> TTA_VIEWS, False/None -> identity, a recipe value ('none',
    'hflip') -> its views, or the view names themselves."""
    if tta is True:
        return TTA_VIEWS
    if not tta:
        return TTA_VIEWS[:1]
    if isinstance(tta, str):
        if tta not in RUN_TTA_VIEWS:
            raise HfMedtlError(f"tta '{tta}': use one of {', '.join(RUN_TTA_VIEWS)}")
        return RUN_TTA_VIEWS[tta]
    return tuple(tta)


def view(pixels, name: str, black=None):
    """The TTA view ``name`` of a normalised pixel tensor (..., C, H, W). ``black``: the normalised value of a
    black pixel per channel (C,), the fill of a rotation's corners (zeros when not given)."""
    from torchvision.transforms.v2 import functional as F

    if name == "identity":
        return pixels
    if name == "hflip":
        return torch.flip(pixels, dims=[-1])
    if name.startswith("rotate"):
        b = torch.zeros(pixels.shape[-3]) if black is None else torch.as_tensor(black, dtype=pixels.dtype)
        b = b.to(pixels.device).view(-1, 1, 1)
        return F.rotate(pixels - b, float(name[len("rotate"):]), interpolation=F.InterpolationMode.BILINEAR) + b
    raise HfMedtlError(f"TTA view '{name}' unknown; use {', '.join(TTA_VIEWS)}")


def unview(maps, name: str):
    """A map computed on the TTA view ``name`` (..., H, W), brought back onto the image's own frame (its inverse
    view; corners a rotation leaves empty are 0)."""
    from torchvision.transforms.v2 import functional as F

    if name == "identity":
        return maps
    if name == "hflip":
        return torch.flip(maps, dims=[-1])
    return F.rotate(maps, -float(name[len("rotate"):]), interpolation=F.InterpolationMode.BILINEAR)


def black_of(processor) -> tuple[float, ...]:
    """The normalised value of a black pixel under ``processor``: (0 - mean) / std per channel."""
    from hf_medtl.data.transforms import preprocessing_from_processor

    prep = preprocessing_from_processor(processor)
    return tuple(-m / s for m, s in zip(prep.mean, prep.std))


def probabilities(logits, multi_label: bool = False) -> np.ndarray:
    """Class probabilities from logits (softmax in float64; a sigmoid per label for multi-label): the one place
    they are computed."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def average(per_view: list) -> np.ndarray:
    """The one averaging rule of TTA and ensembles: the mean of the views' (members') probabilities. (In a model
    that serves views inside its forward, models/modeling_ensemble.average_logits returns the logits of this same
    mean, so that softmax / sigmoid of its output gives it back.)"""
    return sum(per_view) / len(per_view)


def pixels(processor, images: list):
    """The saved processor's evaluation transform of decoded images, stacked: (N, C, H, W)."""
    from hf_medtl.data.transforms import eval_transform

    transform = eval_transform(processor)
    return torch.stack([transform(im) for im in images])


def batch_probabilities(model, pixel_values, views=("identity",), black=None) -> np.ndarray:
    """(batch, labels) probabilities of a pixel batch: the mean over ``views`` of each image's."""
    from hf_medtl.models import is_multi_label

    device = next(model.parameters()).device
    batch = torch.cat([view(pixel_values, v, black) for v in views]).to(device)
    with torch.inference_mode():
        logits = model(pixel_values=batch).logits
    probs = probabilities(logits.float().cpu().numpy(), multi_label=is_multi_label(model))
    return average(list(probs.reshape(len(views), len(pixel_values), -1)))


class Viewed(torch.utils.data.Dataset):
    """A dataset's items with their pixel tensors as the TTA view ``name``."""

    def __init__(self, dataset, name: str, black=None):
        self.dataset, self.name, self.black = dataset, name, black

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        item["pixel_values"] = view(torch.as_tensor(item["pixel_values"]), self.name, self.black)
        return item


def dataset_view_probabilities(trainer, dataset, tta="none", black=None) -> tuple[list[np.ndarray], np.ndarray]:
    """([class probabilities of each view], true labels) of a dataset, gathered over all processes (``tta`` as
    views_of takes it; the first view is the image itself)."""
    from hf_medtl.models import is_multi_label

    if len(dataset) == 0:
        raise HfMedtlError("nothing to predict: the dataset is empty")
    multi_label, per_view, labels = is_multi_label(trainer.model), [], None
    for name in views_of(tta):
        out = trainer.predict(dataset if name == "identity" else Viewed(dataset, name, black),
                              metric_key_prefix="predict")
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
        per_view.append(probabilities(logits, multi_label))
        labels = out.label_ids
    return per_view, labels


def dataset_probabilities(trainer, dataset, tta="none", black=None) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, true labels) of a dataset, gathered over all processes; with TTA the mean over
    the views (``tta`` as views_of takes it, e.g. the recipe's 'hflip'): the one averaging rule."""
    per_view, labels = dataset_view_probabilities(trainer, dataset, tta, black)
    return average(per_view), labels


class Logits(torch.nn.Module):
    """A classifier as a plain module, pixels in, logits tensor out (what grad-cam and the ONNX export take)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


@dataclass
class Served:
    """A saved model as hf_medtl serves it (predict, evaluate, the app, robustness, explain, export): loaded once
    under the loading policy, any views inside its forward switched off, and ``views`` (the run's, or those asked
    for) applied around it with the one averaging rule. ``keys``: how files are read (the run's NIfTI slice and
    axis, image-size limit, columns; flags given override them: hf_medtl.config.saved.data_keys)."""

    model_dir: Path
    model: object
    processor: object
    classes: list
    views: tuple
    keys: SimpleNamespace

    @property
    def black(self) -> tuple[float, ...]:
        return black_of(self.processor)

    @property
    def multi_label(self) -> bool:
        from hf_medtl.models import is_multi_label

        return is_multi_label(self.model)

    @property
    def max_pixels(self) -> int:
        from hf_medtl.config.arguments import DEFAULT_MAX_IMAGE_PIXELS

        return self.keys.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS

    def decode(self, path):
        """A file as the run read its images: a 3-D NIfTI volume as the run's slice, anything else decoded (one
        DecodeError line when it cannot be)."""
        from hf_medtl.data.decode import decode, from_array, is_nifti, nifti_slice

        if self.keys.nifti_slice is not None and is_nifti(path):
            return from_array(nifti_slice(path, self.keys.nifti_axis, self.keys.nifti_slice, self.max_pixels))
        return decode(path, self.max_pixels)

    def probabilities(self, images: list) -> np.ndarray:
        """(len(images), labels) probabilities of decoded images, averaged over the views."""
        return batch_probabilities(self.model, pixels(self.processor, images), self.views, self.black)

    def dataset_probabilities(self, dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, labels) of a dataset of pixel tensors, averaged over the views."""
        return dataset_probabilities(inference_trainer(self.model, batch_size), dataset, self.views, self.black)

    def views_inside(self):
        """The model with the views inside its forward (what the ONNX export bakes into the graph): a model that
        can serve views (an ensemble, `tta_inside`) switched back on, any other wrapped as a one-member ensemble."""
        if hasattr(self.model, "serve_views"):
            self.model.serve_views = True
            return self.model
        from hf_medtl.models.ensemble import with_views

        return with_views(self.model, self.processor, list(self.views)) if len(self.views) > 1 else self.model


def load(model_dir: str | Path, tta=None, allow_pickle_weights: bool = False, trust_remote_code: bool = False,
         data_keys: dict | None = None) -> Served:
    """The saved model in ``model_dir`` ready to serve: ``tta`` None -> the views its run's metrics averaged over
    (run_tta_views), else as views_of takes it (True: TTA_VIEWS, False: the image alone); ``data_keys``: flags
    that override the run's own way of reading files."""
    from hf_medtl.config.saved import data_keys as saved_data_keys
    from hf_medtl.models import load_saved_model

    model_dir = Path(model_dir)
    views = run_tta_views(model_dir) if tta is None else views_of(tta)  # config.json read before the weights
    keys = saved_data_keys(model_dir, data_keys)
    model, processor, classes = load_saved_model(model_dir, allow_pickle_weights, trust_remote_code)
    return Served(model_dir, views_outside(model), processor, classes, tuple(views), keys)
