"""finetune_strategy lora / dora (peft): only the adapters and the head train (counted independently of peft), the
frozen weights keep the checkpoint's values except through the merge (W' = W + B @ A x alpha / r), base + adapter
through peft gives the merged model's outputs, and the saved model is a plain transformers model that pipeline(),
`hf-medtl predict` and a process without peft serve with the probabilities in predictions_test.csv. Bad lora keys:
one line, exit 2, nothing trained."""
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_medtl.cli import main as cli
from hf_medtl.config.recipe import load_recipe
from hf_medtl.finetune import run
from tests.conftest import CLASSES, errors, saved_classifier, tiny_recipe
from tests.data.test_multilabel import FINDINGS, make_multilabel
from tests.inference.test_serving import non_square_folder

R, ALPHA = 4, 8


def lora_targets(model, backbone: str) -> dict[str, nn.Module]:
    """The layers the defaults should adapt, found here by name and kernel, independently of hf_medtl and peft."""
    if backbone == "tiny_vit":
        return {n: m for n, m in model.named_modules() if n.endswith((".q_proj", ".v_proj"))}
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1}


def adapter_size(module: nn.Module, dora: bool = False) -> int:
    """A (r x in) + B (out x r), and DoRA's magnitude (one per output)."""
    n_in, n_out = (module.in_features, module.out_features) if isinstance(module, nn.Linear) else (
        module.in_channels, module.out_channels)
    return R * (n_in + n_out) + (n_out if dora else 0)


def head_name(backbone: str) -> str:
    return "timm_model.classifier" if backbone == "tiny_timm" else "classifier"


def pretrained(model_dir, classes):
    """The checkpoint the run started from, with a head of the run's size (whose weights the adapter carries)."""
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(model_dir, num_labels=len(classes),
                                                           ignore_mismatched_sizes=True).eval()


def lora_delta(adapter: dict, module_name: str, weight: torch.Tensor) -> torch.Tensor:
    a = adapter[f"base_model.model.{module_name}.lora_A.weight"].flatten(1)
    b = adapter[f"base_model.model.{module_name}.lora_B.weight"].flatten(1)
    return (b @ a * (ALPHA / R)).reshape(weight.shape)


def pixel_batch(out, files):
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(out)
    return processor(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")  # peft's probe, in PeftModel
@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_resnet"])
def test_lora_trains_adapters_and_head_only_and_saves_a_plain_merged_model(tmp_path, backbone, request, capsys):
    from safetensors.torch import load_file
    from transformers import pipeline

    model_dir = request.getfixturevalue(backbone)
    data = non_square_folder(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, model_dir, data, num_train_epochs=2, image_size=24, n_bootstrap=0, dedupe=False,
                         finetune_strategy="lora", lora_r=R, lora_alpha=ALPHA, save_adapter=True)
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())

    base = pretrained(model_dir, CLASSES)
    targets = lora_targets(base, backbone)
    head = sum(p.numel() for p in base.get_submodule(head_name(backbone)).parameters())
    assert targets and metrics["trainable_parameters"] == [
        {"from_epoch": 1, "trainable_params": sum(map(adapter_size, targets.values())) + head}]
    assert metrics["total_parameters"] == sum(p.numel() for p in base.parameters())  # the merged model's

    # Every frozen weight (and BatchNorm statistic) is the checkpoint's; an adapted one differs by B @ A x alpha / r.
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    merged = saved_classifier(out).eval()  # (the default flip TTA wraps it; the weights are the merged model's)
    before, after = base.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    moved = 0.0
    for key, value in after.items():
        module = key.rsplit(".", 1)[0]
        if key.startswith(head_name(backbone) + "."):
            continue
        if module in targets and key.endswith(".weight"):
            delta = lora_delta(adapter, module, value)
            assert torch.allclose(value - before[key], delta, atol=1e-5), key
            moved = max(moved, delta.abs().max().item())
        else:
            assert torch.equal(value, before[key]), key
    assert moved > 1e-4  # the adapters did train

    # base + adapter through peft = the merged, saved model, on the run's images.
    from peft import PeftModel

    files = sorted(data.rglob("*.png"))[:8]
    pixels = pixel_batch(out, files)
    adapted = PeftModel.from_pretrained(pretrained(model_dir, CLASSES), out / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(adapted(pixel_values=pixels).logits, merged(pixel_values=pixels).logits, atol=1e-5)

    # The saved folder is a plain transformers model: no peft file outside adapter/, no peft key.
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == R
    assert not [p for p in out.rglob("adapter_*") if p.parent != out / "adapter"]
    assert not any(k in json.dumps(json.loads((out / "config.json").read_text())) for k in ("peft", "lora"))
    assert not any(s in k for k in load_file(str(out / "model.safetensors")) for s in ("lora_", "base_layer",
                                                                                        "modules_to_save"))

    # On the non-square test images, pipeline() gives the model alone as the run scored it (predictions_test_no_tta),
    # and `hf-medtl predict` the run's flip TTA (predictions_test.csv).
    with open(out / "predictions_test.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    with open(out / "predictions_test_no_tta.csv") as f:
        alone = {r["path"]: r for r in csv.DictReader(f)}
    classifier = pipeline("image-classification", model=str(out))
    for path, row in alone.items():
        served = {p["label"]: p["score"] for p in classifier(str(data / path), top_k=len(CLASSES))}
        assert served == pytest.approx({c: float(row[f"p_{c}"]) for c in CLASSES}, abs=1e-5), path
    capsys.readouterr()
    assert cli(["predict", str(out), *(str(data / p) for p in rows), "--format", "csv"]) == 0
    for r in csv.DictReader(io.StringIO(capsys.readouterr().out)):
        row = rows[str(Path(r["path"]).relative_to(data))]
        assert {c: float(r[c]) for c in CLASSES} == pytest.approx({c: float(row[f"p_{c}"]) for c in CLASSES}, abs=1e-5)

    # ONNX: the export's own check runs onnxruntime against PyTorch on real images.
    pytest.importorskip("onnxruntime")
    assert cli(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--check", str(data / "benign")]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out

    # ... and in a process where peft cannot be imported at all.
    path, row = next(iter(alone.items()))
    code = ("import json, sys; sys.modules['peft'] = None\n"  # import peft fails; transformers sees no peft
            "from transformers import pipeline\n"
            "p = pipeline('image-classification', model=sys.argv[1], trust_remote_code=True)(sys.argv[2], top_k=9)\n"
            "print(json.dumps({x['label']: x['score'] for x in p}))")
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(data / path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == pytest.approx({c: float(row[f"p_{c}"]) for c in CLASSES},
                                                                     abs=1e-5)


def test_dora_multilabel_with_class_weights(tmp_path, tiny_timm):
    """A CNN (timm EfficientNet through TimmWrapper) with DoRA on its pointwise convolutions, multi-label, class
    weights: adapters + magnitudes + head train, and pipeline()'s sigmoids are the run's test probabilities."""
    from transformers import pipeline

    csv_file = make_multilabel(tmp_path / "cxr", n=40)
    recipe = tiny_recipe(tmp_path, tiny_timm, tmp_path, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         num_train_epochs=2, val_ratio=0.2, test_ratio=0.2, class_weights="balanced", n_bootstrap=0,
                         label_smoothing_factor=0.0, finetune_strategy="dora", lora_r=R, lora_alpha=ALPHA, lora_dropout=0.1)
    metrics = run(load_recipe(recipe))
    out = tmp_path / "run"
    base = pretrained(tiny_timm, FINDINGS)
    head = sum(p.numel() for p in base.get_submodule(head_name("tiny_timm")).parameters())
    expected = sum(adapter_size(m, dora=True) for m in lora_targets(base, "tiny_timm").values()) + head
    assert metrics["trainable_parameters"] == [{"from_epoch": 1, "trainable_params": expected}]
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert not (out / "adapter").exists() and len(metrics["test"]["per_label"]["roc_auc"]) == 3

    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    classifier = pipeline("image-classification", model=str(out), function_to_apply="sigmoid", top_k=None)
    for row in rows:
        served = {p["label"]: p["score"] for p in classifier(str(csv_file.parent / row["path"]))}
        assert served == pytest.approx({c: float(row[f"prob_{c}"]) for c in FINDINGS}, abs=1e-5), row["path"]


@pytest.mark.parametrize("values,message", [
    ({"finetune_strategy": "lora", "lora_r": 0}, "'lora_r' must be at least 1, got 0"),
    ({"finetune_strategy": "dora", "lora_alpha": 0}, "'lora_alpha' must be above 0"),
    ({"finetune_strategy": "lora", "lora_dropout": 1.0}, "'lora_dropout' must lie in [0, 1)"),
    ({"finetune_strategy": "full", "lora_r": 4}, "'lora_r' applies to finetune_strategy 'lora' or 'dora', not 'full'"),
    ({"save_adapter": True}, "'save_adapter' applies to finetune_strategy 'lora' or 'dora'"),
    ({"finetune_strategy": "lora", "lora_target_modules": ["no_such_layer"]},
     "'no_such_layer' matches no module of ViTForImageClassification"),
    ({"finetune_strategy": "lora", "lora_target_modules": ["classifier"]}, "names the classification head"),
    ({"finetune_strategy": "lora", "lora_target_modules": ["attention"]}, "names ViTAttention layers, which LoRA cannot"),
])
def test_bad_lora_keys_are_one_line_before_training(tmp_path, image_folder, tiny_vit, capsys, values, message):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=24, **values)
    assert cli(["finetune", str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run" / "metrics.json").exists() and not list((tmp_path / "run").glob("checkpoint-*"))


@pytest.mark.slow
def test_lora_killed_and_resumed_equals_uninterrupted(tmp_path, image_folder, tiny_timm, hf_medtl_log):
    """Checkpoints hold the adapters and the head's trained copy (the θ* snapshot too): a LoRA run killed with SIGKILL
    after its first checkpoint and resumed ends as an uninterrupted one, merged and saved the same."""
    from safetensors.torch import load_file

    from tests.training.test_resume import RESULT_KEYS, launch_and_kill_after_first_checkpoint

    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=4, image_size=24, save_strategy="epoch",
                         learning_rate=1e-2, n_bootstrap=0, finetune_strategy="lora", lora_r=R, lora_alpha=ALPHA)
    straight = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "straight")]))
    killed = tmp_path / "run"
    assert launch_and_kill_after_first_checkpoint(recipe, killed) == -9
    assert not (killed / "metrics.json").exists()
    done = max(int(p.parent.name.split("-")[1]) for p in killed.glob("checkpoint-*/adaptive_schedule.json"))
    assert done < 4 * 4  # killed before the last epoch's checkpoint (4 steps per epoch)
    hf_medtl_log.clear()
    resumed = run(load_recipe(recipe, ["--resume_from_checkpoint", "last"]))
    trained_again = {m for m in hf_medtl_log.messages if re.match(r" +\d+ \| ", m)}
    assert len(trained_again) == resumed["epochs_run"] - done // 4  # only the epochs after the checkpoint ran
    for key in (*RESULT_KEYS, "trainable_parameters", "total_parameters"):
        assert resumed[key] == straight[key], key
    a, b = load_file(str(killed / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_lora_two_process_launch(tmp_path, image_folder, tiny_vit):
    """DDP over two CPU ranks: both decide alike, every rank merges, rank 0 alone writes the model and the adapter."""
    from tests.conftest import launch_two_ranks

    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, use_cpu=True, image_size=24,
                         per_device_train_batch_size=4, n_bootstrap=0, finetune_strategy="lora", save_adapter=True)
    proc, by_rank = launch_two_ranks(recipe)
    assert by_rank["0"] and by_rank["0"] == by_rank["1"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout.count("test accuracy") == 1
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"][0]["trainable_params"] < metrics["total_parameters"] / 5
