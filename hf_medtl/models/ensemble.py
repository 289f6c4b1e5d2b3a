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


def combine(member_dirs: list[str | Path], names: list[str]):
    """(ensemble model in eval mode, the members' shared image processor, class names) of saved models."""
    register_auto_classes()  # save_pretrained then writes modeling_ensemble.py + modeling_medtl.py and an auto_map
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
    # TimmWrapper's image processor has no file of its own: it is read from config.json (its pretrained_cfg)
    timm = {"pretrained_cfg": model0.config.pretrained_cfg, "image_processor_type": type(processor).__name__} \
        if type(processor).__name__ == "TimmWrapperImageProcessor" else {}
    config = MedtlEnsembleConfig(members=[m.config for m, _, _ in loaded], member_names=names,
                                 id2label=dict(model0.config.id2label), label2id=dict(model0.config.label2id),
                                 problem_type=model0.config.problem_type, **timm)
    ensemble = MedtlEnsembleForImageClassification(config)
    for target, (model, _, _) in zip(ensemble.members, loaded):
        target.load_state_dict(model.state_dict(), strict=True)
    return ensemble.eval(), processor, classes
