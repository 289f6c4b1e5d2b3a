"""The decode-once image cache (hf_medtl.data.cache): same pixels as decoding the files, per-file invalidation,
and no partial table after a killed build."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hf_medtl.data import cache
from hf_medtl.data.dataset import cached_loaders, sample_keys
from hf_medtl.data.decode import decode
from hf_medtl.data.sources import scan_class_folders
from hf_medtl.data.transforms import build_transforms, preprocessing_from_processor
from tests.conftest import REPO, make_image_folder
from tests.data.cache_helpers import full_disk


def mixed_folder(root, per_class=(4, 4, 4)):
    """Class folders of mixed modes plus non-square, 16-bit and EXIF-rotated files: every decode rule."""
    make_image_folder(root, per_class=per_class)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (46, 70, 3), dtype=np.uint8)).save(root / "benign" / "wide.png")
    Image.fromarray(rng.integers(0, 60000, (50, 30), dtype=np.uint16)).save(root / "normal" / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(root / "malignant" / "exif.jpg", exif=exif)
    return root


@pytest.mark.parametrize("backbone", ["tiny_timm", "tiny_resnet", "tiny_vit"])
def test_cached_eval_pixels_equal_decoding_the_files(tmp_path, backbone, request):
    from hf_medtl.config.arguments import ModelArguments
    from hf_medtl.models import load_backbone

    _, processor = load_backbone(ModelArguments(model_name_or_path=str(request.getfixturevalue(backbone))), ["a", "b"], 40)  # (a multiple of the ViT's 8-px patches: other sizes are refused at load)
    prep = preprocessing_from_processor(processor)
    samples = scan_class_folders(mixed_folder(tmp_path / "data")).samples
    _, eval_tf = build_transforms(prep, augment=False)
    load, _ = cached_loaders(samples, sample_keys(samples), prep, tmp_path / "cache")
    for i, s in enumerate(samples):
        assert torch.equal(eval_tf(load(i)), eval_tf(decode(s.source))), s.path.name
    # the dataset's batched call of the processor gives the per-image tensors
    batched = eval_tf.batch([load(i) for i in range(len(samples))])
    assert all(torch.equal(b, eval_tf(load(i))) for i, b in enumerate(batched))


def test_train_copy_is_the_decoded_image_when_small_and_keeps_aspect_when_large(tmp_path):
    small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8))
    large = Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 600, 3), dtype=np.uint8))
    v = cache.Variant("train", (128, 128), "bicubic", crop_scale_min=0.8)
    assert np.array_equal(np.asarray(v.apply(small)[0]), np.asarray(small))  # its crops are the uncached crops
    out, _ = v.apply(large)
    assert out.size[0] / out.size[1] == pytest.approx(1.5, abs=0.01)
    assert min(out.size) * np.sqrt(0.8 * 0.75) >= 128 - 1  # the smallest random crop still covers 128 px
    assert max(out.size) < 600


def test_a_changed_file_invalidates_only_its_entry(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5))
    samples = scan_class_folders(data).samples
    variant, root = cache.Variant("eval", (16, 16), "bilinear"), tmp_path / "cache"
    _, built = cache.build(sample_keys(samples), [s.source for s in samples], variant, root)
    assert built == 15
    changed = samples[4].path
    Image.fromarray(np.full((24, 24, 3), 7, np.uint8)).save(changed, format="PNG" if changed.suffix == ".png" else "JPEG")
    samples = scan_class_folders(data).samples
    keys = sample_keys(samples)
    store, built = cache.build(keys, [s.source for s in samples], variant, root)
    assert built == 1  # only the changed file was decoded again
    assert np.asarray(store.image(keys[4])).max() <= 12  # and the new pixels are served
    _, built = cache.build(keys, [s.source for s in samples], variant, root)
    assert built == 0


BUILD = """
import sys, time
from hf_medtl.data import cache, decode as dec
from hf_medtl.data.dataset import sample_keys
from hf_medtl.data.sources import scan_class_folders
slow = dec.decode
def decode(*a, **k):
    time.sleep(0.15)
    return slow(*a, **k)
cache.decode = decode
cache.CHUNK = 6
samples = scan_class_folders(sys.argv[1]).samples
cache.build(sample_keys(samples), [s.source for s in samples], cache.Variant("eval", (16, 16), "bilinear"), sys.argv[2])
"""


def test_a_killed_build_serves_no_partial_table_and_the_next_one_completes_it(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=(8, 8, 8))
    root = tmp_path / "cache"
    folder = root / cache.Variant("eval", (16, 16), "bilinear").folder
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(data), str(root)], env=env)
    deadline = time.time() + 120
    while not list(folder.glob("chunk-*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # killed in the middle of the second chunk
    proc.wait()
    assert list(folder.glob("chunk-*")), "the first chunk should have been completed before the kill"
    partial = cache.ImageCache(folder)
    assert 0 < len(partial) < 24 and len(partial) % 6 == 0  # whole chunks only
    samples = scan_class_folders(data).samples
    keys = sample_keys(samples)
    store, built = cache.build(keys, [s.source for s in samples], cache.Variant("eval", (16, 16), "bilinear"), root)
    assert built == 24 - len(partial)
    for k, s in zip(keys, samples):
        assert np.array_equal(np.asarray(store.image(k)), np.asarray(decode(s.source).resize((16, 16), Image.BILINEAR)))


def test_finetune_with_and_without_the_cache_scores_the_same(tmp_path, tiny_timm):
    """No augmentation: the cached run is the uncached run, to the last digit; the rerun reuses every entry."""
    import json

    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe
    from tests.conftest import tiny_recipe

    data = mixed_folder(tmp_path / "data", per_class=(10, 10, 10))
    results = {}
    for cached in (False, True, True):
        recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=2, augment=False, data_cache=cached,
                             n_bootstrap=0, output_dir=str(tmp_path / f"run_{cached}"), dedupe=False)
        results.setdefault(cached, []).append(run(load_recipe(recipe)))
    for split in ("validation", "test"):
        assert results[True][0][split]["accuracy"] == results[False][0][split]["accuracy"]
        assert results[True][0][split]["ece"] == pytest.approx(results[False][0][split]["ece"], abs=1e-9)
    assert results[True][1]["test"] == results[True][0]["test"]
    assert json.loads((tmp_path / "run_True" / "metrics.json").read_text())["test"]["accuracy"] == \
        results[True][0]["test"]["accuracy"]


def test_evaluate_reuses_the_runs_cache_and_scores_what_decoding_scores(tmp_path, tiny_timm, hf_medtl_log):
    """`hf-medtl evaluate` on the run's own images finds every evaluation copy the run decoded (the saved
    processor is the run's), and its predictions equal those of --no_data_cache."""
    import csv

    from hf_medtl.cli import main
    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe
    from tests.conftest import tiny_recipe

    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))
    run(load_recipe(tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=1, n_bootstrap=0, dedupe=False)))
    outs = {}
    for name, extra in (("cached", []), ("files", ["--no_data_cache"])):
        hf_medtl_log.clear()
        assert main(["evaluate", str(tmp_path / "run"), str(data), "--n_bootstrap", "0", "--output_dir",
                     str(tmp_path / name), *extra]) == 0
        outs[name] = hf_medtl_log.text
        with open(tmp_path / name / "predictions.csv") as f:
            outs[name + "_rows"] = list(csv.DictReader(f))
    assert "0 of 18 copies decoded now" in outs["cached"]
    assert "image cache" not in outs["files"]
    assert outs["cached_rows"] == outs["files_rows"] and len(outs["files_rows"]) == 18


def test_a_full_disk_while_building_is_one_line_and_the_partial_chunk_goes_at_once(tmp_path, tiny_timm, capsys,
                                                                                  monkeypatch):
    from hf_medtl.cli import main
    from tests.conftest import errors, tiny_recipe

    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))
    root = tmp_path / "images"
    full_disk(monkeypatch, root)
    recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=1, n_bootstrap=0, data_cache_dir=str(root))
    assert main(["finetune", str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and f"image cache '{root}'" in lines[0], lines
    assert "no space left" in lines[0] and "data_cache_dir" in lines[0]
    # no partial chunk keeps the space for an hour (the near-duplicate search's small result is kept, written before)
    assert not [p for p in root.rglob("*") if p.is_file() and "near_duplicates" not in p.parts]
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_temporary_folders_of_writers_that_are_gone_are_removed_by_the_next_build(tmp_path):
    import socket

    data = make_image_folder(tmp_path / "data", per_class=(2, 2, 2))
    samples = scan_class_folders(data).samples
    variant, root = cache.Variant("eval", (16, 16), "bilinear"), tmp_path / "cache"
    folder = root / variant.folder
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    (folder / f".tmp-{host}-{dead.pid}-abc").mkdir(parents=True)  # a killed build's, minutes old
    (folder / f".tmp-{host}-{os.getpid()}-def").mkdir()  # a live build's
    cache.build(sample_keys(samples), [s.source for s in samples], variant, root)
    assert sorted(p.name for p in folder.glob(".tmp-*")) == [f".tmp-{host}-{os.getpid()}-def"]
