"""A saved model serves what the run evaluated: for every backbone family the recipes use, pipeline() on a
non-square image gives the probabilities the run wrote to predictions_test.csv for that image."""
import numpy as np
import pytest
from PIL import Image

from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import CLASSES, assert_pipeline_serves, tiny_recipe


def non_square_folder(root, n=10, size=(70, 46)):
    """BreaKHis-like 700x460 proportions: the left band carries the class, so a centre crop would lose it."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
            arr[:, : size[0] // 6] = 60 + 80 * c  # the band at the border
            Image.fromarray(arr).save(root / name / f"{name}_{i}.png")
    return root


@pytest.mark.parametrize("backbone", ["tiny_resnet", "tiny_convnext", "tiny_vit", "tiny_timm"])
def test_pipeline_reproduces_the_runs_test_predictions(tmp_path, backbone, request):
    data = non_square_folder(tmp_path / "data")
    size = {"tiny_vit": 24, "tiny_timm": 32}.get(backbone)
    recipe = tiny_recipe(tmp_path, request.getfixturevalue(backbone), data, num_train_epochs=1, image_size=size,
                         n_bootstrap=0, dedupe=False)
    run(load_recipe(recipe))
    out = tmp_path / "run"
    assert_pipeline_serves(out, data, atol=2e-6, what=backbone)


def test_serving_processor_squashes_and_keeps_the_backbones_interpolation(tiny_resnet, tiny_timm):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_medtl.models import serving_processor

    resnet = serving_processor(AutoModelForImageClassification.from_pretrained(tiny_resnet),
                               AutoImageProcessor.from_pretrained(tiny_resnet), 40)
    assert resnet.size == {"height": 40, "width": 40} and int(resnet.resample) == 3  # bicubic, as the backbone
    img = Image.new("RGB", (70, 46), (128, 128, 128))
    img.paste((255, 255, 255), (0, 0, 10, 46))  # a band at the left border survives (no centre crop)
    pixels = resnet(images=img, return_tensors="pt")["pixel_values"][0]
    assert pixels.shape == (3, 40, 40) and pixels[:, :, 0].mean() > pixels[:, :, 20].mean() + 0.5
    timm_model = AutoModelForImageClassification.from_pretrained(tiny_timm)
    proc = serving_processor(timm_model, AutoImageProcessor.from_pretrained(tiny_timm), 40)
    assert timm_model.config.pretrained_cfg["crop_mode"] == "squash" and proc.data_config["input_size"] == (3, 40, 40)
    assert proc(images=img)["pixel_values"][0][:, :, 0].mean() > proc(images=img)["pixel_values"][0][:, :, 20].mean()


@pytest.mark.parametrize("inside", [False, True], ids=["views_around_the_model", "tta_inside"])
def test_one_serving_path_every_loader_gives_the_runs_probabilities(tmp_path, image_folder, tiny_vit, capsys, inside):
    """One serving path and one averaging rule: for a run scored with flip TTA (applied around the standard model,
    or inside the saved model's forward with `tta_inside`), `evaluate`, `predict`, the app, the ONNX export and
    the run's own predictions_test.csv give every test image the same probabilities (1e-5)."""
    import csv
    import json

    import onnxruntime as ort

    from hf_medtl.cli import main as cli_main
    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.inference import core
    from hf_medtl.inference.app import classify_file

    run(load_recipe(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, image_size=24, tta="hflip",
                                tta_inside=inside, n_bootstrap=0, augment=False)))
    out = tmp_path / "run"
    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    files = [image_folder / r["path"] for r in rows]
    expected = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])

    assert cli_main(["evaluate", str(out), str(image_folder), "--output_dir", str(tmp_path / "ev"),
                     "--n_bootstrap", "0"]) == 0
    with open(tmp_path / "ev" / "predictions.csv") as f:
        evaluated = {r["path"]: r for r in csv.DictReader(f)}
    by_evaluate = np.array([[float(evaluated[str(p)][f"p_{c}"]) for c in CLASSES] for p in files])

    capsys.readouterr()
    assert cli_main(["predict", str(out), *map(str, files), "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert all(p["tta"] == ["identity", "hflip"] for p in predicted)
    by_predict = np.array([[p["probabilities"][c] for c in CLASSES] for p in predicted])

    served = core.load(out)
    assert served.views == ("identity", "hflip")
    by_app = np.array([[classify_file(served, p)[0][c] for c in CLASSES] for p in files])

    onnx = tmp_path / "model.onnx"
    assert cli_main(["export", str(out), "--onnx", str(onnx), "--check", str(image_folder)]) == 0
    pixels = np.stack([eval_transform(served.processor)(decode(p)).numpy() for p in files])
    by_onnx = core.probabilities(ort.InferenceSession(str(onnx)).run(["logits"], {"pixel_values": pixels})[0])

    for name, got in [("evaluate", by_evaluate), ("predict", by_predict), ("app", by_app), ("onnx", by_onnx)]:
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
    # the views differ: an average over them is not the image alone
    assert np.abs(core.load(out, tta=False).probabilities([decode(p) for p in files]) - expected).max() > 1e-6
