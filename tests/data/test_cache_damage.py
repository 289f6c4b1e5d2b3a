"""Issue 35, item 6 and round 4's last points: damaged cache bytes are never served. Flipped bytes inside an
image-cache chunk's pixels are decoded again (`hf-medtl evaluate` scores what it scores from the files), a chunk that
cannot be opened is set aside and rebuilt (one line naming it where it cannot be), an entry damaged while a run reads
it is decoded again from its source (also inside DataLoader workers; one line where the source is gone), and a flipped
bit in a feature-cache entry is computed again (the run trains what an undamaged cache trains)."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from hf_medtl.cli import main
from tests.conftest import errors, make_image_folder, tiny_recipe
from tests.data.cache_helpers import same_tables, scored  # noqa: F401 (fixtures)


def pixel_region(chunk: Path) -> tuple[Path, int, int]:
    """(the chunk's Arrow file, offset, length) of its pixels column's bytes in the file."""
    import datasets

    table = datasets.load_from_disk(str(chunk)).data.table
    pixels = b"".join(v.as_py() for v in table.column("pixels"))
    [arrow] = list(chunk.glob("*.arrow"))
    data = arrow.read_bytes()
    start = data.find(pixels[:256])
    assert start >= 0 and data[start:start + len(pixels)] == pixels
    return arrow, start, len(pixels)


def flip(file: Path, positions) -> None:
    with open(file, "r+b") as f:
        for at in positions:
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0xFF]))


def evaluate(model, data, out, *extra):
    assert main(["evaluate", str(model), str(data), "--n_bootstrap", "0", "--output_dir", str(out), *extra]) == 0


def test_flipped_pixels_in_an_image_cache_chunk_are_decoded_again(tmp_path, tiny_resnet, scored, hf_medtl_log):
    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5), classes=("LABEL_0", "LABEL_1", "LABEL_2"))
    cache = ["--data_cache_dir", str(tmp_path / "cache")]
    tables = {}
    for name, extra in (("files", ["--no_data_cache"]), ("built", cache)):
        scored.clear()
        evaluate(tiny_resnet, data, tmp_path / name, *extra)
        tables[name] = list(scored)
    [chunk] = list((tmp_path / "cache").glob("*/chunk-*"))
    arrow, start, length = pixel_region(chunk)
    flip(arrow, np.linspace(start, start + length - 1, 2000).astype(int))  # 2,000 bytes across every image

    scored.clear()
    hf_medtl_log.clear()
    evaluate(tiny_resnet, data, tmp_path / "damaged", *cache)
    same_tables(tables["files"], list(scored), "after the damage")
    assert "15 damaged entries (content not matching its checksum) decoded again" in hf_medtl_log.text
    # The rebuilt entries serve from then on: nothing is decoded a third time.
    hf_medtl_log.clear()
    scored.clear()
    evaluate(tiny_resnet, data, tmp_path / "again", *cache)
    assert "0 of 15 copies decoded now" in hf_medtl_log.text and "damaged" not in hf_medtl_log.text
    same_tables(tables["files"], list(scored), "read back")


def damage(chunk: Path, how: str) -> None:
    [arrow] = list(chunk.glob("*.arrow"))
    data = arrow.read_bytes()
    if how == "truncated":
        arrow.write_bytes(data[:len(data) // 2])
    elif how == "zeroed header":
        arrow.write_bytes(b"\0" * 64 + data[64:])
    else:
        (chunk / "state.json").write_text("")


@pytest.mark.parametrize("how", ["truncated", "zeroed header", "empty state"])
def test_a_chunk_that_cannot_be_opened_is_set_aside_and_rebuilt(tmp_path, tiny_resnet, scored, hf_medtl_log, how,
                                                               monkeypatch, capsys):
    from hf_medtl.data import cache

    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5), classes=("LABEL_0", "LABEL_1", "LABEL_2"))
    evaluate(tiny_resnet, data, tmp_path / "files", "--no_data_cache")
    expected = list(scored)
    cached = ["--data_cache_dir", str(tmp_path / "cache")]
    evaluate(tiny_resnet, data, tmp_path / "built", *cached)
    [chunk] = list((tmp_path / "cache").glob("*/chunk-*"))
    damage(chunk, how)

    scored.clear()
    hf_medtl_log.clear()
    evaluate(tiny_resnet, data, tmp_path / "rebuilt", *cached)
    same_tables(expected, list(scored), f"after a {how} chunk")
    assert f"image cache chunk '{chunk}' could not be opened" in hf_medtl_log.text
    assert "set aside, its images are decoded again" in hf_medtl_log.text and "15 of 15 copies decoded now" in hf_medtl_log.text
    [new] = list((tmp_path / "cache").glob("*/chunk-*"))
    assert new != chunk and not chunk.exists() and not list(chunk.parent.glob(".tmp*"))

    # Where the damaged chunk cannot be taken out (a read-only cache folder), one line names it; nothing is served.
    damage(new, how)
    capsys.readouterr()

    def read_only(path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cache, "set_aside", read_only)
    assert main(["evaluate", str(tiny_resnet), str(data), "--n_bootstrap", "0", "--output_dir",
                 str(tmp_path / "read_only"), *cached]) == 2
    [line] = errors(capsys)
    assert line.startswith(f"error: image cache chunk '{new}' cannot be opened (") and \
        "cannot be set aside to be rebuilt (Read-only file system); delete that folder" in line
    assert new.exists() and not (tmp_path / "read_only" / "report.json").exists()


def test_an_entry_damaged_while_read_is_decoded_again_and_refused_without_its_source(tmp_path, hf_medtl_log):
    from hf_medtl.data import cache
    from hf_medtl.data.types import DataError
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(files[-1])
    variant = cache.Variant("eval", (16, 16), "bilinear")
    built, n = cache.build(["a", "b", "c"], files, variant, tmp_path / "cache")
    assert n == 3 and np.array_equal(np.asarray(built.image("b")), np.asarray(Image.open(files[1])))
    [chunk] = list((tmp_path / "cache").glob("*/chunk-*"))
    arrow, start, _ = pixel_region(chunk)
    flip(arrow, [start + 16 * 16 * 3 + 7])  # one byte of entry 'b', under the open (memory-mapped) cache
    assert np.array_equal(np.asarray(built.image("b")), np.asarray(Image.open(files[1])))  # from the file again
    assert "the entry of 'b' was damaged on disk during the run; decoded again from its source" in hf_medtl_log.text
    files[1].unlink()  # nothing true left to serve: one line naming the chunk, the entry and the file
    with pytest.raises(DataError, match=r"image cache chunk '.*': the entry of 'b' does not match its checksum "
                                        r"\(damaged on disk\) and cannot be made again: image cache: '.*1.png' cannot "
                                        r"be decoded \(file not found\)"):
        built.image("b")
    assert np.array_equal(np.asarray(built.image("a")), np.asarray(Image.open(files[0])))


@pytest.fixture
def damaged_after_build(monkeypatch):
    """Every image-cache build of this test is damaged once built (2,000 flipped pixel bytes per chunk), after the
    build checked it: what a run's loader then reads. ``gone``: also delete the sources (nothing to decode again)."""
    from hf_medtl.data import cache

    build, options = cache.build, {"gone": []}

    def damaging(*args, **kwargs):
        built = build(*args, **kwargs)
        for chunk in built[0].folder.glob("chunk-*"):
            arrow, start, length = pixel_region(chunk)
            flip(arrow, np.linspace(start, start + length - 1, 2000).astype(int))
        for path in options["gone"]:
            path.unlink()
        return built

    monkeypatch.setattr(cache, "build", damaging)
    return options


def test_an_entry_damaged_under_dataloader_workers_is_decoded_again_or_one_line(tmp_path, tiny_timm, hf_medtl_log,
                                                                               damaged_after_build, capsys):
    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))

    def finetune(name, **extra):
        recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=1, image_size=24, augment=False, n_bootstrap=0,
                             dedupe=False, dataloader_num_workers=1, output_dir=str(tmp_path / name), **extra)
        return main(["finetune", str(recipe)])

    assert finetune("files", data_cache=False) == 0
    hf_medtl_log.clear()
    assert finetune("damaged", data_cache_dir=str(tmp_path / "cache")) == 0  # the loader's worker decodes them again
    from hf_medtl.data.cache import ImageCache

    import datasets

    [folder] = list((tmp_path / "cache").iterdir())
    keys = [k for chunk in folder.glob("chunk-*") for k in datasets.load_from_disk(str(chunk))["key"]]
    stored = ImageCache(folder)
    assert len(keys) == 18 and not any(stored.intact(k) for k in keys)  # every entry the run read was damaged
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("files", "damaged"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # trained on the files' pixels
    m1, m2 = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("files", "damaged"))
    assert m1["test"] == m2["test"]

    # The sources gone too: the worker's DataError reaches the user as its one line, not torch's wrapper.
    damaged_after_build["gone"] = sorted(data.rglob("*.*"))
    capsys.readouterr()
    assert finetune("gone", data_cache_dir=str(tmp_path / "cache_2")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-2000:]
    [line] = [l for l in err.splitlines() if l.startswith("error:")]
    assert line.startswith("error: image cache chunk '") and "does not match its checksum (damaged on disk) and " \
        "cannot be made again: image cache: '" in line and "cannot be decoded (file not found)" in line
    assert not (tmp_path / "gone" / "metrics.json").exists()


def test_a_flipped_bit_in_a_feature_cache_entry_is_computed_again(tmp_path, tiny_timm, hf_medtl_log):
    data = make_image_folder(tmp_path / "data", per_class=(6, 6, 6))
    recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=2, image_size=24, learning_rate=0.05,
                         finetune_strategy="linear_probe", augment=False, n_bootstrap=0, dedupe=False,
                         data_cache=False, feature_cache_dir=str(tmp_path / "features"))
    assert main(["finetune", str(recipe), "--output_dir", str(tmp_path / "first")]) == 0
    entries = [p for p in (tmp_path / "features").iterdir() if (p / "complete.json").is_file()]
    assert len(entries) == 3
    import datasets

    train = next(p for p in entries if len(datasets.load_from_disk(str(p))) == 12)  # the training split's
    [arrow] = list(train.glob("*.arrow"))
    first = np.asarray(datasets.load_from_disk(str(train))["features"][0], dtype=np.float64)
    raw = arrow.read_bytes()
    kind = np.float32 if raw.find(first.astype(np.float32).tobytes()) >= 0 else np.float64
    at = raw.find(first.astype(kind).tobytes())
    assert at >= 0
    flip_bit = at + (3 if kind == np.float32 else 7)  # the top byte of the first feature: sign and exponent
    with open(arrow, "r+b") as f:
        f.seek(flip_bit)
        byte = f.read(1)[0]
        f.seek(flip_bit)
        f.write(bytes([byte ^ 0x40]))  # one bit of the exponent: the feature becomes huge (or tiny)

    hf_medtl_log.clear()
    assert main(["finetune", str(recipe), "--output_dir", str(tmp_path / "second")]) == 0
    assert "does not match its checksum: damaged" in hf_medtl_log.text and "computing it again" in hf_medtl_log.text
    a = load_file(tmp_path / "first" / "model.safetensors")
    b = load_file(tmp_path / "second" / "model.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # trained on the features, not the damage
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("first", "second"))
    assert m1["test"] == m2["test"]
