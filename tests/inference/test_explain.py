"""Grad-CAM (grad-cam package): maps at the image's size in [0, 1] that depend on the class, for a CNN and a ViT;
overlay PNGs from `predict --cam` and `evaluate --cam N`."""
import shutil

import numpy as np
from PIL import Image

from hf_medtl.cli import main
from hf_medtl.inference.explain import confident_errors, image_cams, target_layer
from hf_medtl.models import load_saved_model


def test_cam_maps_have_the_image_size_range_and_depend_on_the_class(trained_run):
    model, processor, classes = load_saved_model(trained_run)
    image = Image.open(trained_run.parent / "images" / "malignant" / "malignant_000.png").convert("RGB").resize((40, 30))
    maps = image_cams(model, processor, [image] * 3, [0, 1, 2])
    for m in maps:
        assert m.shape == (30, 40) and m.min() >= 0.0 and m.max() <= 1.0
    assert maps[1].max() > 0.99  # the predicted class's map is normalised to [0, 1]; others may be all zero
    assert np.abs(maps[0] - maps[1]).mean() > 0.05 and np.abs(maps[1] - maps[2]).mean() > 0.05
    layer, reshape = target_layer(model, (64, 64))
    assert layer is model.timm_model.bn2 and reshape is None  # EfficientNet: the last feature map
    layer, _ = target_layer(model, (24, 24))  # there bn2's map is 1 x 1: the last one with a spatial extent
    assert layer is not model.timm_model.bn2 and isinstance(layer, type(model.timm_model.bn2))


def test_vit_cam_uses_the_last_blocks_tokens_on_a_grid(tiny_vit):
    model, processor, _ = load_saved_model(tiny_vit)
    layer, reshape = target_layer(model, (24, 24))
    assert layer is model.vit.layers[-1].layernorm_before and reshape is not None
    tokens = np.arange(2 * 10 * 4, dtype=np.float32).reshape(2, 10, 4)  # class token + 3 x 3 patches
    import torch

    grid = reshape(torch.from_numpy(tokens))
    assert tuple(grid.shape) == (2, 4, 3, 3) and torch.equal(grid[0, :, 0, 0], torch.from_numpy(tokens[0, 1]))
    [m] = image_cams(model, processor, [Image.new("RGB", (50, 20), (90, 30, 200))], [3])
    assert m.shape == (20, 50) and 0.0 <= m.min() <= m.max() <= 1.0


def test_predict_cam_writes_one_overlay_per_image(trained_run, tmp_path, capsys):
    folder = trained_run.parent / "images" / "normal"
    files = sorted(folder.iterdir())[:3]
    assert main(["predict", str(trained_run), *map(str, files), "--cam", str(tmp_path / "cam")]) == 0
    written = sorted((tmp_path / "cam").iterdir())
    assert [p.name for p in written] == [f"{f.stem}_cam.png" for f in files]
    with Image.open(written[0]) as png:
        assert png.size[0] > 400 and png.size[1] > 200  # image + overlay + colour bar side by side


def test_confident_errors_are_ranked_per_true_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.7, 0.3], [0.95, 0.05]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert confident_errors(probs, labels, 1) == {0: [1], 1: [5]}
    assert confident_errors(probs, labels, 5) == {0: [1, 2], 1: [5, 4]}


def test_evaluate_cam_writes_the_most_confident_errors(trained_run, tmp_path, capsys):
    data = tmp_path / "swapped"
    images = trained_run.parent / "images"
    shutil.copytree(images / "benign", data / "malignant")  # every one of them is an error now
    shutil.copytree(images / "normal", data / "normal")
    assert main(["evaluate", str(trained_run), str(data), "--output_dir", str(tmp_path / "eval"), "--cam", "2",
                 "--n_bootstrap", "0"]) == 0
    written = sorted(p.name for p in (tmp_path / "eval" / "cam").iterdir())
    assert written[:2] == ["malignant_as_benign_0_cam.png", "malignant_as_benign_1_cam.png"]
    assert all(not name.startswith("malignant_as_malignant") for name in written) and len(written) <= 4
    assert "Grad-CAM overlays of the most confident errors" in capsys.readouterr().out


def test_tta_cam_is_the_mean_of_the_views_maps_brought_back(trained_run, tmp_path):
    """With --tta the overlay shows the views' maps, each brought back onto the image, averaged; a flip's map
    brought back is the plain map of the mirrored image, mirrored."""
    import torch

    from hf_medtl.inference import core
    from hf_medtl.inference.explain import cam_maps

    model, processor, _ = load_saved_model(trained_run)
    image = Image.open(trained_run.parent / "images" / "benign" / "benign_001.jpg").convert("RGB").resize((48, 48))
    x = core.pixels(processor, [image])
    flip_map = cam_maps(model, torch.flip(x, dims=[-1]), [0])[0][:, ::-1]
    plain_map = cam_maps(model, x, [0])[0]
    [both] = image_cams(model, processor, [image], [0], views=("identity", "hflip"))
    expected = Image.fromarray(((plain_map + flip_map) / 2).astype(np.float32), mode="F").resize((48, 48), Image.BILINEAR)
    np.testing.assert_allclose(both, np.clip(np.asarray(expected), 0, 1), atol=1e-5)
    [alone] = image_cams(model, processor, [image], [0])
    assert np.abs(both - alone).max() > 1e-3  # the views' maps differ, so the overlay is not the plain one
    assert main(["predict", str(trained_run), str(trained_run.parent / "images" / "benign" / "benign_001.jpg"), "--tta",
                 "--cam", str(tmp_path / "cam")]) == 0
    assert [p.name for p in (tmp_path / "cam").iterdir()] == ["benign_001_cam.png"]
