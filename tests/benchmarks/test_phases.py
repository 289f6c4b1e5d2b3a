"""benchmarks/phases.py: hf_medtl (finetune + evaluate) and the example recipe as processes of their own on a
generated .npz and a tiny timm model; each run's phases come back and account for its wall, and the table holds
them side by side (GPU utilisation: 'not measured' without a GPU)."""
import json
import sys

import pytest

from tests.conftest import REPO
from tests.benchmarks.test_recipes_vs_example import _npz

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_phases_table_of_hf_medtl_and_the_example_recipe(tmp_path, tiny_timm):
    import phases

    npz = _npz(tmp_path / "tiny.npz")
    assert phases.main(["--npz_file", str(npz), "--class_names", '["a", "b"]', "--model_name_or_path",
                        str(tiny_timm), "--image_size", "24", "--epochs", "2", "--batch", "8",
                        "--out", str(tmp_path / "out"), "--n_bootstrap", "0"]) == 0
    result = json.loads((tmp_path / "out" / "phases.json").read_text())
    runs = result["runs"]
    assert set(runs) == {"hf_medtl", "hf_medtl evaluate", "example"}
    for name, r in runs.items():
        assert r["returncode"] == 0, r["log_tail"]
        t = r["timings"]
        assert t["total"] <= r["wall_s"] + 0.05 and t.get("other", 0) <= 0.1 * t["total"] + 0.5, (name, t)
    for name in ("hf_medtl", "example"):
        assert runs[name]["timings"]["first_epoch"] > 0 and runs[name]["timings"]["later_epochs"] > 0
        assert runs[name]["train_runtime_s"] > 0 and runs[name]["images_per_s"] > 0
    assert runs["hf_medtl evaluate"]["timings"]["scoring"] > 0
    md = (tmp_path / "out" / "phases.md").read_text()
    assert "| first_epoch |" in md and "| seconds | hf_medtl | hf_medtl evaluate | example |" in md
    assert "not measured (no GPU)" in md
    assert phases.seconds("4m05s") == 245 and phases.seconds("0.04s") == 0.04 and phases.seconds("2h10m") == 7800
