"""Any image encoder as a backbone: checkpoints that AutoModel loads (DINOv2 with `pooling` set, SigLIP and CLIP
vision towers, DINOv3 and ViT-MAE, which have no image-classification class) train through `hf-medtl finetune` with
hf_medtl's head on their pooled output, save as MedtlForImageClassification, and pipeline() serves the
probabilities the run wrote to predictions_test.csv on non-square images; `partial` trains their last encoder layer
and the head only; a pooling the model cannot give is one line, exit 2, before training."""
import csv
import json

import pytest
import torch

from hf_medtl.cli import main as cli
from tests.conftest import CLASSES, assert_pipeline_serves, errors, saved_classifier, serve_with_remote_code, tiny_recipe
from tests.inference.test_serving import non_square_folder

SIZES = dict(image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64)


def _save(path, model_class, config, processor):
    with torch.random.fork_rng():  # the same weights whichever tests ran first
        torch.manual_seed(0)
        model_class(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """name -> a local checkpoint of a 2-layer encoder for 24-px images, saved with the processor its family ships."""
    from transformers import (BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, Dinov2Config,
                              Dinov2Model, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel, ViTImageProcessor,
                              ViTMAEConfig, ViTMAEModel)
    from transformers.models.dinov3_vit import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    root = tmp_path_factory.mktemp("encoders")
    return {
        "dinov2": _save(root / "dinov2", Dinov2Model, Dinov2Config(**SIZES), BitImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 24, "width": 24})),
        "siglip": _save(root / "siglip", SiglipVisionModel, SiglipVisionConfig(**SIZES), SiglipImageProcessor(
            size={"height": 24, "width": 24})),
        "clip": _save(root / "clip", CLIPVisionModel, CLIPVisionConfig(**SIZES), CLIPImageProcessor(
            size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})),
        "dinov3": _save(root / "dinov3", DINOv3ViTModel, DINOv3ViTConfig(**SIZES, num_register_tokens=2),
                        DINOv3ViTImageProcessor(size={"height": 24, "width": 24})),
        "vit_mae": _save(root / "vit_mae", ViTMAEModel, ViTMAEConfig(**SIZES), ViTImageProcessor(
            size={"height": 24, "width": 24})),
    }


# (name, pooling in the recipe, pooling saved, tokens before the patches, pooled width)
CASES = [("dinov2", "cls", "cls", 1, 32), ("dinov2", "mean", "mean", 1, 32), ("dinov2", "cls+mean", "cls+mean", 1, 64),
         ("siglip", None, "pooler", 0, 32), ("siglip", "mean", "mean", 0, 32), ("clip", None, "pooler", 0, 32),
         ("clip", "cls+mean", "cls+mean", 1, 64), ("dinov3", None, "pooler", 0, 32), ("dinov3", "mean", "mean", 3, 32),
         ("vit_mae", None, "cls", 1, 32)]


@pytest.mark.parametrize("name,pooling,saved,prefix,width", CASES)
def test_encoder_trains_and_pipeline_serves_the_runs_predictions(tmp_path, encoders, name, pooling, saved, prefix,
                                                                 width):
    from transformers import pipeline

    data = non_square_folder(tmp_path / "data")
    size = 32 if name in ("clip", "vit_mae") else 24  # another size than their config's: positions interpolated
    extra = {"pooling": pooling} if pooling else {}
    recipe = tiny_recipe(tmp_path, encoders[name], data, num_train_epochs=1, image_size=size, n_bootstrap=0,
                         dedupe=False, head="bottleneck", bottleneck_dim=8, **extra)
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    outer = json.loads((out / "config.json").read_text())
    # hf_medtl's head class (its code saved beside it); the default flip TTA recorded for hf_medtl's serving
    assert outer["tta_views"] == ["identity", "hflip"] and "views" not in outer
    assert outer["auto_map"]["AutoModelForImageClassification"].endswith("MedtlForImageClassification")
    config = outer
    assert config["model_type"] == "hf_medtl_classifier" and config["encoder"] is True
    assert (config["pooling"], config["num_prefix_tokens"], config["feature_dim"]) == (saved, prefix, width)
    assert config["backbone_config"].get("mask_ratio", 0.0) == 0.0  # ViT-MAE keeps every patch
    with open(out / "predictions_test_no_tta.csv") as f:  # what pipeline() serves: the model alone
        rows = list(csv.DictReader(f))
    classifier = pipeline("image-classification", model=str(out))
    assert classifier.image_processor.size == {"height": size, "width": size}  # squashed, not cropped
    for row in rows:
        served = {p["label"]: p["score"] for p in classifier(str(data / row["path"]), top_k=len(CLASSES))}
        for c in CLASSES:
            assert served[c] == pytest.approx(float(row[f"p_{c}"]), abs=1e-5), (name, row["path"], c)


def test_pooling_is_what_it_says_on_the_encoders_tokens(encoders):
    """cls+mean is [CLS, mean of the patch tokens after CLS and registers], computed here from the tokens."""
    from transformers import AutoModel

    from hf_medtl.config.arguments import ModelArguments
    from hf_medtl.models.encoders import encoder_config, load_encoder

    args = ModelArguments(model_name_or_path=str(encoders["dinov3"]), pooling="cls+mean")
    model = load_encoder(args.model_name_or_path, encoder_config(args.model_name_or_path, args), args,
                         dict(num_labels=3), 24).eval()
    reference = AutoModel.from_pretrained(encoders["dinov3"]).eval()
    pixels = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        tokens = reference(pixel_values=pixels).last_hidden_state  # CLS, 2 registers, 9 patches
        pooled = model.backbone(pixel_values=pixels).logits
    assert tokens.shape[1] == 1 + 2 + 9
    torch.testing.assert_close(pooled, torch.cat([tokens[:, 0], tokens[:, 3:].mean(1)], 1))


# The modules after the encoder layers: they belong to the last stage, as in every other family
LAYERS = {"dinov2": ("encoder.layer", ["layernorm"]),
          "siglip": ("encoder.layers", ["post_layernorm", "head"]),
          "clip": ("encoder.layers", ["post_layernorm"]),
          "dinov3": ("model.layer", ["norm"])}


@pytest.mark.parametrize("name", list(LAYERS))
def test_partial_trains_the_last_encoder_layer_and_the_head_only(tmp_path, encoders, name):
    from transformers import AutoModel

    data = non_square_folder(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, encoders[name], data, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         dedupe=False, finetune_strategy="partial", trainable_stages=1, pooling="mean")
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    base = AutoModel.from_pretrained(encoders[name])
    layers, post = LAYERS[name]
    last = base.get_submodule(layers)[-1]
    head = 32 * len(CLASSES) + len(CLASSES)  # the linear head on the 32 mean-pooled features
    expected = sum(p.numel() for m in [last] + [base.get_submodule(n) for n in post] for p in m.parameters()) + head
    assert metrics["trainable_parameters"][0]["trainable_params"] == expected
    # what was frozen is the checkpoint's; the last layer moved
    saved = saved_classifier(out).backbone.encoder
    first, trained = base.get_submodule(layers)[0], saved.get_submodule(layers)
    for (key, before), after in zip(first.state_dict().items(), trained[0].state_dict().values()):
        torch.testing.assert_close(after, before, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(a, b) for a, b in zip(last.parameters(), trained[-1].parameters()))


@pytest.mark.parametrize("backbone,pooling,message", [
    ("tiny_resnet", "cls", "gives feature maps, which have no CLS token"),
    ("siglip", "cls+mean", "has no CLS token"),
    ("tiny_timm", "mean", "applies to transformers encoders, not to 'timm_wrapper'"),
])
def test_a_pooling_the_model_cannot_give_is_one_line_before_training(tmp_path, image_folder, encoders, request,
                                                                      capsys, backbone, pooling, message):
    model_dir = encoders[backbone] if backbone in encoders else request.getfixturevalue(backbone)
    recipe = tiny_recipe(tmp_path, model_dir, image_folder, num_train_epochs=1, image_size=32, pooling=pooling)
    assert cli(["finetune", str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run" / "metrics.json").exists() and not list((tmp_path / "run").glob("checkpoint-*"))


def test_an_encoder_model_loads_in_plain_transformers_with_remote_code(tmp_path, encoders):
    """The saved modeling_medtl.py holds the pooling too: a process without hf_medtl serves the run's probabilities;
    the model exports to ONNX."""
    data = non_square_folder(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, encoders["dinov3"], data, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         dedupe=False, pooling="cls+mean")
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    with open(out / "predictions_test_no_tta.csv") as f:
        row = next(csv.DictReader(f))
    served = serve_with_remote_code(out, data / row["path"], tmp_path)
    for c in CLASSES:
        assert served[c] == pytest.approx(float(row[f"p_{c}"]), abs=1e-5), c
    # and ONNX export traces the pooling (DINOv3's RoPE included); --check compares ONNX with torch on images
    assert cli(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--check", str(data / "benign")]) == 0


def test_a_linear_probe_on_cached_encoder_features_trains_the_same_head(tmp_path, image_folder, encoders):
    """The feature cache reads the pooled output through the same wrapper as training on images does."""
    from safetensors.torch import load_file

    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.finetune import run

    recipe = tiny_recipe(tmp_path, encoders["siglip"], image_folder, num_train_epochs=2, image_size=24, n_bootstrap=0,
                         finetune_strategy="linear_probe", augment=False, feature_cache_dir=str(tmp_path / "cache"))
    images = run(load_recipe(recipe, ["--cache_features", "false", "--output_dir", str(tmp_path / "uncached")]))
    cached = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "cached")]))
    assert cached["cached_features"] and not images["cached_features"]
    a, b = load_file(tmp_path / "uncached" / "model.safetensors"), load_file(tmp_path / "cached" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.parametrize("name", list(LAYERS))
def test_an_encoders_stages_are_its_stem_and_each_layer_covering_all_but_the_head(encoders, name):
    """What partial, gradual and layer_decay count in: the embeddings, then one stage per encoder layer (the final
    norm / pooler with the last), every backbone parameter exactly once."""
    from hf_medtl.config.arguments import ModelArguments
    from hf_medtl.models.encoders import encoder_config, load_encoder
    from hf_medtl.models.strategies import backbone_stages, head_parameter_names

    args = ModelArguments(model_name_or_path=str(encoders[name]))
    model = load_encoder(args.model_name_or_path, encoder_config(args.model_name_or_path, args), args,
                         dict(num_labels=3), 24)
    stages = backbone_stages(model)
    layers, post = LAYERS[name]
    stem = ("backbone.encoder.embeddings.", "backbone.encoder.pre_layrnorm.")  # CLIP normalises before its layers
    assert len(stages) == 1 + 2 and all(n.startswith(stem) for n in stages[0])
    for i in (0, 1):
        assert any(n.startswith(f"backbone.encoder.{layers}.{i}.") for n in stages[1 + i])
    assert any(n.startswith(f"backbone.encoder.{post[0]}.") for n in stages[-1])
    named = [n for s in stages for n in s]
    assert sorted(named) == sorted(set(dict(model.named_parameters())) - head_parameter_names(model))


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")  # peft's probe, in PeftModel
def test_lora_on_an_encoder_trains_its_attention_adapters_and_the_head_and_serves_merged(tmp_path, encoders):
    data = non_square_folder(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, encoders["dinov3"], data, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         dedupe=False, finetune_strategy="lora", lora_r=4, lora_alpha=8)
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    adapters = 2 * 2 * 4 * (32 + 32)  # q_proj and v_proj (32 -> 32) in each of 2 layers, rank 4: A + B
    assert metrics["trainable_parameters"][0]["trainable_params"] == adapters + 32 * len(CLASSES) + len(CLASSES)
    assert_pipeline_serves(out, data, atol=1e-5)


def test_a_config_saved_before_encoders_builds_the_classifier_backbone_as_before(tmp_path):
    """config.json of an hf_medtl head written before the encoder keys existed: no encoder, no pooling."""
    from transformers import ViTConfig, ViTForImageClassification

    from hf_medtl.models import MedtlClassifierConfig, MedtlForImageClassification

    backbone = ViTConfig(image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64).to_dict()
    old = {"model_type": "hf_medtl_classifier", "backbone_config": backbone, "head": "bottleneck", "bottleneck_dim": 8,
           "head_dropout": 0.1, "l1_feature_reg": 0.0, "l2_feature_reg": 0.0, "num_labels": 3}
    model = MedtlForImageClassification(MedtlClassifierConfig(**old))
    assert isinstance(model.backbone, ViTForImageClassification) and model.bottleneck.in_features == 32
    model.save_pretrained(tmp_path)
    again = MedtlForImageClassification.from_pretrained(tmp_path)
    assert again.config.encoder is False and isinstance(again.backbone, ViTForImageClassification)


@pytest.mark.slow
def test_an_encoder_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, image_folder, encoders):
    """DINOv2 with mean pooling and LoRA on its attention (the recipes' foundation-encoder path): SIGKILL after the
    first checkpoint, `resume_from_checkpoint last`, and the metrics and saved weights are those of a straight run."""
    from safetensors.torch import load_file

    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.finetune import run
    from tests.training.test_resume import RESULT_KEYS, launch_and_kill_after_first_checkpoint

    recipe = tiny_recipe(tmp_path, encoders["dinov2"], image_folder, num_train_epochs=3, image_size=24, n_bootstrap=0,
                         save_strategy="epoch", learning_rate=1e-2, pooling="mean", finetune_strategy="lora", lora_r=4)
    straight = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "straight")]))
    killed = tmp_path / "run"
    assert launch_and_kill_after_first_checkpoint(recipe, killed) == -9
    assert not (killed / "metrics.json").exists()
    resumed = run(load_recipe(recipe, ["--resume_from_checkpoint", "last"]))
    for key in RESULT_KEYS:
        assert resumed[key] == straight[key], key
    a, b = load_file(str(killed / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
