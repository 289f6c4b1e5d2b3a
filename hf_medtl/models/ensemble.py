"""Saved classifiers combined into one MedtlEnsembleForImageClassification (hf_medtl/models/modeling_ensemble.py):
the members must agree on what they serve (classes, label kind, image processor), since one processor and one
label map serve them all; each member is rebuilt from its config and its weights copied strictly, so that the
saved ensemble is known to load back as it was built."""
from __future__ import annotations

from pathlib import Path

from hf_medtl.models.backbones import load_saved_model
from hf_medtl.models.heads import ModelError, register_auto_classes
from hf_medtl.models.modeling_ensemble import MedtlEnsembleConfig, MedtlEnsembleForImageClassification


def _processor_settings(processor) -> dict:
    d = processor.to_dict()
    d.pop("processor_class", None)
    return d


def _parts(model) -> tuple[list, list[str]]:
    """(member modules, views) of a loaded model: an ensemble's own (a run saved with its TTA inside, or an
    ensemble of such runs), else the model itself seen as is."""
    if isinstance(model, MedtlEnsembleForImageClassification):
        return list(model.members), list(model.config.views)
    return [model], ["identity"]


def assemble(models: list, processor, names: list[str], views: list[str] | None = None):
    """One MedtlEnsembleForImageClassification (eval mode) of in-memory classifiers that share ``processor``; its
    forward averages over the members (ensembles among ``models`` are opened into theirs) and ``views``."""
    register_auto_classes()  # save_pretrained then writes modeling_ensemble.py + modeling_medtl.py and an auto_map
    opened = [_parts(m) for m in models]
    views_of_models = {tuple(v) for _, v in opened}
    if len(views_of_models) > 1:
        raise ModelError(f"models served with different test-time views {sorted(views_of_models)} cannot join one "
                         "ensemble; ensemble models of one recipe")
    views = list(views or next(iter(views_of_models)))
    members = [m for parts, _ in opened for m in parts]
    # the members an ensemble among ``models`` brings are named after it
    names = [n if len(parts) == 1 else f"{n}/{i}" for n, (parts, _) in zip(names, opened) for i in range(len(parts))]
    first = members[0]
    # TimmWrapper's image processor has no file of its own: it is read from config.json (its pretrained_cfg)
    # (and its architecture: part of that processor's settings, so the saved one is the run's to the letter)
    timm = {"pretrained_cfg": first.config.pretrained_cfg, "architecture": getattr(first.config, "architecture", None),
            "image_processor_type": type(processor).__name__} \
        if type(processor).__name__ == "TimmWrapperImageProcessor" else {}
    config = MedtlEnsembleConfig(members=[m.config for m in members], member_names=names, views=views,
                                 id2label=dict(first.config.id2label), label2id=dict(first.config.label2id),
                                 problem_type=first.config.problem_type, **timm)
    ensemble = MedtlEnsembleForImageClassification(config)
    for target, model in zip(ensemble.members, members):
        target.load_state_dict(model.state_dict(), strict=True)
    return ensemble.to(next(first.parameters()).device).eval()


def with_views(model, processor, views: list[str]):
    """``model`` served with test-time ``views`` inside its forward (a one-member ensemble), so that pipeline() and
    the ONNX export give the view-averaged probabilities its run scored."""
    return assemble([model], processor, ["model"], views)


def combine(member_dirs: list[str | Path], names: list[str], views: list[str] | None = None):
    """(ensemble model in eval mode, the members' shared image processor, class names) of saved models, serving
    ``views`` inside its forward (default: the views the members serve)."""
    if len(member_dirs) < 2:
        raise ModelError(f"an ensemble needs at least 2 saved models, got {len(member_dirs)}")
    loaded = [load_saved_model(d) for d in member_dirs]
    model0, processor, classes = loaded[0]
    for d, (model, proc, cls) in zip(member_dirs[1:], loaded[1:]):
        why = ("its classes differ" if cls != classes else
               "its label kind differs" if model.config.problem_type != model0.config.problem_type else
               "its image processor differs (size or normalisation)"
               if _processor_settings(proc) != _processor_settings(processor) else None)
        if why:
            raise ModelError(f"{d}: cannot join an ensemble with {member_dirs[0]} ({why}); ensemble models of one "
                             "recipe and one dataset")
    return assemble([m for m, _, _ in loaded], processor, names, views), processor, classes
