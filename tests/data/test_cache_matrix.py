"""The cache matrix: image cache on/off x feature cache on/off x processor kinds x data check on/off. A run reads
the same pixels and scores the same probabilities, bit for bit, whichever caches served it; `hf-medtl evaluate`
of a saved classifier whose own processor centre-crops (HF shortest_edge + crop_pct, do_center_crop + crop_size,
timm crop_pct < 1) scores with the image cache what it scores from the files."""
import json

import numpy as np
import pytest
import torch

from hf_medtl.config.recipe import load_recipe
from hf_medtl.data.check import inspect_all
from hf_medtl.data.dataset import cached_loaders, sample_keys
from hf_medtl.data.decode import decode
from hf_medtl.data.sources import scan_class_folders
from hf_medtl.data.transforms import Prepared, build_transforms, preprocessing_from_processor
from hf_medtl.finetune import run
from tests.conftest import make_image_folder, tiny_recipe
from tests.data.cache_helpers import live_timm, same_tables, scored  # noqa: F401 (fixtures)
from tests.data.test_cache import mixed_folder

slow = pytest.mark.slow
FAST = {("live_timm", True), ("tiny_resnet", False)}  # the rest of the matrix is marked slow
CELLS = [pytest.param(b, check, marks=() if (b, check) in FAST else slow)
         for b in ("live_timm", "tiny_vit", "tiny_resnet", "tiny_convnext") for check in (True, False)]


@pytest.mark.parametrize("backbone,data_check", CELLS)
def test_a_run_scores_the_same_whichever_caches_serve_it(tmp_path, backbone, data_check, request, scored,
                                                         hf_medtl_log):
    model = request.getfixturevalue(backbone)
    data = mixed_folder(tmp_path / "data", per_class=(6, 6, 6))
    results = {}
    cells = [(False, False), (True, False), (False, True), (True, True), (True, True)]  # the last reuses both
    for n, (image_cache, features) in enumerate(cells):
        scored.clear()
        hf_medtl_log.clear()
        recipe = tiny_recipe(tmp_path, model, data, num_train_epochs=2, learning_rate=0.05, image_size=24,
                             finetune_strategy="linear_probe", augment=False, n_bootstrap=0, dedupe=False,
                             data_check=data_check, data_cache=image_cache, cache_features=features,
                             data_cache_dir=str(tmp_path / "image_cache"),
                             feature_cache_dir=str(tmp_path / f"features_{image_cache}"),
                             output_dir=str(tmp_path / f"run{n}"))
        out = run(load_recipe(recipe))
        assert out["cached_features"] == features
        weights = (tmp_path / f"run{n}" / "model.safetensors").read_bytes()
        results[n] = (list(scored), weights, out["test"], out["validation"])
    assert "features reused" in hf_medtl_log.text and "computed once" not in hf_medtl_log.text
    assert "0 of 21 copies decoded now" in hf_medtl_log.text
    first = results[0]
    test = next(p for name, _, p in first[0] if name == "predictions_test.csv")
    assert len({row.tobytes() for row in test}) > 1  # the scores depend on the pixels: a change would show
    for n in range(1, len(cells)):
        same_tables(first[0], results[n][0], f"cell {cells[n]}")
        assert results[n][1] == first[1], f"cell {cells[n]}: the saved weights differ"
        assert results[n][2:] == first[2:], f"cell {cells[n]}: the metrics differ"


CROPPERS = {  # a saved classifier's own processor, as the Hub ships them
    "shortest_edge+crop_pct": ("tiny_resnet", None),
    "do_center_crop": ("tiny_convnext", lambda: __import__("transformers").BitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 30}, do_center_crop=True)),
    "timm crop_pct 0.95": ("tiny_timm", None),
    "vit squash": ("tiny_vit", None),
}


def _saved(request, tmp_path, kind):
    """The fixture model, with the processor of ``kind`` saved beside it."""
    import shutil

    fixture, processor = CROPPERS[kind]
    model = request.getfixturevalue(fixture)
    if processor is None:
        return model
    out = tmp_path / "model"
    shutil.copytree(model, out)
    processor().save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", list(CROPPERS))
@pytest.mark.parametrize("data_check", [True, False])
def test_cached_evaluation_tensors_equal_the_processor_on_the_files(tmp_path, request, kind, data_check):
    """The evaluation tensors themselves: cache keys from the data check's pixel hashes or from file contents."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(_saved(request, tmp_path, kind))
    prep = preprocessing_from_processor(processor)
    samples = scan_class_folders(mixed_folder(tmp_path / "data")).samples
    shas = [i.sha for i in inspect_all([s.source for s in samples])] if data_check else None
    _, eval_tf = build_transforms(prep, augment=False)
    for _ in range(2):  # built, then read back
        load, _ = cached_loaders(samples, sample_keys(samples, shas), prep, tmp_path / "cache")
        cached = eval_tf.batch([load(i) for i in range(len(samples))])
        files = eval_tf.batch([decode(s.source) for s in samples])
        for s, a, b in zip(samples, cached, files):
            assert a.dtype == b.dtype and torch.equal(a, b), s.path.name
        assert all(isinstance(load(i), Prepared) for i in range(len(samples)))  # stored after the geometry
        assert all(torch.equal(eval_tf(load(i)), b) for i, b in enumerate(files))


def _evaluate(model, data, out, *extra):
    from hf_medtl.cli import main

    assert main(["evaluate", str(model), str(data), "--n_bootstrap", "0", "--output_dir", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k == "shortest_edge+crop_pct" else slow)
                                  for k in CROPPERS])
def test_evaluate_scores_the_same_from_the_image_cache(tmp_path, request, kind, scored, hf_medtl_log):
    model = _saved(request, tmp_path, kind)
    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5), classes=("LABEL_0", "LABEL_1", "LABEL_2"))
    from PIL import Image

    wide = np.random.default_rng(5).integers(0, 255, (30, 70, 3), dtype=np.uint8)  # a crop cuts its sides
    Image.fromarray(wide).save(data / "LABEL_1" / "wide.png")
    runs = {}
    for name, extra in (("files", ["--no_data_cache"]), ("built", []), ("read", [])):
        scored.clear()
        hf_medtl_log.clear()
        runs[name] = (_evaluate(model, data, tmp_path / name, "--data_cache_dir", str(tmp_path / "cache"), *extra),
                      list(scored))
    assert "0 of 16 copies decoded now" in hf_medtl_log.text
    for name in ("built", "read"):
        same_tables(runs["files"][1], runs[name][1], name)


@slow
def test_two_crop_settings_never_share_an_entry(tmp_path, tiny_resnet, scored, hf_medtl_log):
    """The same weights saved with crop_pct 0.875 and with 0.5: each one's cached scores are its own uncached ones."""
    import shutil

    from transformers import ConvNextImageProcessor

    data = make_image_folder(tmp_path / "data", per_class=(4, 4, 4), classes=("LABEL_0", "LABEL_1", "LABEL_2"))
    other = tmp_path / "half"
    shutil.copytree(tiny_resnet, other)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.5).save_pretrained(other)
    tables = {}
    for model in (tiny_resnet, other):
        for extra in (["--no_data_cache"], ["--data_cache_dir", str(tmp_path / "cache")]):
            scored.clear()
            hf_medtl_log.clear()
            _evaluate(model, data, tmp_path / f"{model.name}_{len(extra)}", *extra)
            tables[(model.name, len(extra))] = list(scored)
        assert "12 of 12 copies decoded now" in hf_medtl_log.text  # nothing of the other crop's entries reused
        same_tables(tables[(model.name, 1)], tables[(model.name, 2)], model.name)
    a, b = tables[(tiny_resnet.name, 1)][0][2], tables[("half", 1)][0][2]
    assert a.tobytes() != b.tobytes()  # the crop matters, so a shared entry would have shown
