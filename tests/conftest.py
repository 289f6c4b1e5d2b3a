"""Shared fixtures: offline Hub, a private HF_HOME, one thread, generated images and tiny checkpoints."""
import os
import tempfile

# Before anything imports torch or huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
# Each pytest-xdist worker its own (the suite runs on every core: pyproject's addopts), so no two tests share a cache.
if os.environ.get("PYTEST_XDIST_WORKER") or "HF_HOME" not in os.environ:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_medtl_test_home_")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("benign", "malignant", "normal")


def make_image(label_index: int, rng: np.random.Generator, size: int = 24, mode: str = "RGB") -> Image.Image:
    """A learnable synthetic image: the class decides which third of the image is bright."""
    arr = rng.integers(0, 60, (size, size), dtype=np.uint8)
    band = size // 3
    arr[:, label_index * band:(label_index + 1) * band] += 150
    img = Image.fromarray(arr, "L")
    return img if mode == "L" else img.convert(mode)


def make_image_folder(root: Path, per_class=(12, 12, 12), seed: int = 0, classes=CLASSES) -> Path:
    """root/<class>/*.png|jpg in a mix of modes (L, RGB, RGBA, P), as real collections are."""
    rng = np.random.default_rng(seed)
    modes = ("L", "RGB", "RGBA", "P")
    for c, (name, n) in enumerate(zip(classes, per_class)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            mode = modes[i % len(modes)]
            ext = "jpg" if mode in ("L", "RGB") and i % 2 else "png"
            make_image(c, rng, mode=mode).save(root / name / f"{name}_{i:03d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A 2-layer ViT for 24-px images, saved the way a Hub checkpoint is (config, weights, processor)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    import torch

    path = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5)
    with torch.random.fork_rng():  # the same weights whichever tests ran first (some random inits are near-flat)
        torch.manual_seed(0)
        ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_timm(tmp_path_factory):
    """timm's test_efficientnet through TimmWrapper, with pretrained_cfg in config.json as on the Hub."""
    import timm
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    path = tmp_path_factory.mktemp("tiny_timm")
    cfg = dict(timm.create_model("test_efficientnet", pretrained=False).pretrained_cfg)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    cfg["input_size"] = [3, 32, 32]
    config = TimmWrapperConfig(architecture="test_efficientnet", pretrained_cfg=cfg, num_labels=10)
    with torch.random.fork_rng():  # the same weights whichever tests ran first (the trained_run fixture learns on these)
        torch.manual_seed(0)
        TimmWrapperForImageClassification(config).save_pretrained(path)
    return path


def write_recipe(path: Path, **values) -> Path:
    path.write_text(json.dumps(values))
    return path


def tiny_recipe(tmp_path, model_dir, image_folder, **extra):
    values = dict(model_name_or_path=str(model_dir), data_dir=str(image_folder), num_train_epochs=3,
                  per_device_train_batch_size=8, learning_rate=3e-3, seed=1, output_dir=str(tmp_path / "run"),
                  disable_tqdm=True)
    return write_recipe(tmp_path / "tiny.json", **{**values, **extra})


def assert_pipeline_serves(out: Path, image_root: Path, atol: float = 1e-5, classes=CLASSES, what=""):
    """transformers' pipeline() on a saved run gives, for every test image, the probabilities in its
    predictions_test.csv (the run's evaluation), or in predictions_test_no_tta.csv when its TTA is applied around
    the model (the model alone, which the run scores too): what serves the model sees what was evaluated."""
    import csv

    from transformers import pipeline

    alone = Path(out) / "predictions_test_no_tta.csv"
    with open(alone if alone.is_file() else Path(out) / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows
    classifier = pipeline("image-classification", model=str(out))
    for row in rows:
        served = {p["label"]: p["score"] for p in classifier(str(Path(image_root) / row["path"]), top_k=len(classes))}
        for c in classes:
            assert served[c] == pytest.approx(float(row[f"p_{c}"]), abs=atol), (what, row["path"], c)


def assert_evaluation_matches_run(predictions_csv: Path, run_rows: list[dict], classes=CLASSES, atol=1e-5):
    """`hf-medtl evaluate`'s predictions.csv gives each of the run's own rows (its predictions_test.csv) the same
    probabilities: evaluate read and served the images as the run did."""
    import csv

    with open(predictions_csv) as f:
        scored = {r["path"]: r for r in csv.DictReader(f)}
    for r in run_rows:
        [match] = [v for k, v in scored.items() if k.endswith(r["path"])]
        np.testing.assert_allclose([float(match[f"p_{c}"]) for c in classes], [float(r[f"p_{c}"]) for c in classes],
                                   atol=atol)


def saved_classifier(out: Path):
    """The classifier a run trained, from its saved folder: the one member of a model that serves flip TTA inside
    its forward (the default), else the saved model itself."""
    from transformers import AutoModelForImageClassification

    from hf_medtl.models import register_auto_classes

    register_auto_classes()
    model = AutoModelForImageClassification.from_pretrained(out)
    return model.members[0] if getattr(model.config, "model_type", "") == "hf_medtl_ensemble" else model


def serve_with_remote_code(out: Path, image: Path, cwd: Path, top_k: int = 3, trust_remote_code: bool = True) -> dict:
    """{label: probability} of ``image`` from pipeline() (with trust_remote_code unless told otherwise), in a fresh
    interpreter that never imports hf_medtl (no PYTHONPATH; it asserts so): the saved folder alone serves it."""
    import subprocess
    import sys

    code = ("import sys, json; from transformers import pipeline; "
            f"p = pipeline('image-classification', model={str(out)!r}, trust_remote_code={trust_remote_code}); "
            f"r = p({str(image)!r}, top_k={top_k}); "
            "assert 'hf_medtl' not in sys.modules; print(json.dumps({x['label']: x['score'] for x in r}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def errors(capsys) -> list[str]:
    """The error lines a failed command printed; there must be no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _save_hf(path, model, processor):
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory):
    """An HF ResNet with the processor microsoft/resnet-50 ships (ConvNextImageProcessor: bicubic, crop_pct)."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5)
    return _save_hf(tmp_path_factory.mktemp("tiny_resnet"), ResNetForImageClassification(config),
                    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875))


@pytest.fixture(scope="session")
def tiny_convnext(tmp_path_factory):
    """An HF ConvNeXt with facebook/convnext-tiny-224's kind of processor."""
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
    return _save_hf(tmp_path_factory.mktemp("tiny_convnext"), ConvNextForImageClassification(config),
                    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875))


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Relative paths (a recipe's default outputs/<name>) land in the test's folder, never in the repository;
    so does the decode-once image cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_MEDTL_IMAGE_CACHE", str(tmp_path / "image_cache"))


@pytest.fixture
def hf_medtl_log(caplog):
    """hf_medtl's log lines (its logger does not propagate to the root one that caplog watches)."""
    import logging

    logger = logging.getLogger("hf_medtl")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="hf_medtl")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_timm):
    """A finished finetune run (tiny timm EfficientNet, 3 generated classes, 12 epochs at lr 5e-3: at 1e-2 BatchNorm's
    running statistics lag and eval-mode predictions fail on some seeds) that has learnt the task:
    a saved model to predict with, explain, export and serve. Seed 000's settings (the preset), under which it was
    tuned: with the default recipe's label smoothing its Grad-CAM maps of different classes sometimes differ by
    less than the explain test asks."""
    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe

    root = tmp_path_factory.mktemp("trained_run")
    images = make_image_folder(root / "images")
    recipe = write_recipe(root / "r.json", model_name_or_path=str(tiny_timm), data_dir=str(images), image_size=24,
                          num_train_epochs=12, adaptive_lr=False, augment=False, learning_rate=5e-3,
                          per_device_train_batch_size=8, seed=1, output_dir=str(root / "run"), preset="paper")
    run(load_recipe(recipe))
    return root / "run"


EPOCH_ROW = re.compile(r"\[hf_medtl rank (\d)\] +(\d+ \|[^\n]*)")  # ranks' lines may interleave


def run_cmd(cmd, timeout=600, **extra_env):
    """Run a command from the repository root with this checkout importable; it must succeed."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), **extra_env}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(recipe):
    """`accelerate launch` a recipe on two real CPU ranks (gloo) -> (the process, each rank's epoch rows).
    (`accelerate launch --cpu --num_processes 2` silently runs one process; --multi_gpu with use_cpu gives two.)"""
    import shutil
    import sys

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    proc = run_cmd([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                    "hf_medtl/finetune.py", str(recipe)], HF_MEDTL_LOG_ALL_RANKS="1")
    found = EPOCH_ROW.findall(proc.stderr)
    return proc, {r: [line for rank, line in found if rank == r] for r in ("0", "1")}
