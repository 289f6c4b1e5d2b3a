"""benchmarks/table2.py: the 15 paper recipes skip cleanly without data or weights; what can run, runs."""
import importlib.util
import json

from tests.conftest import REPO, make_image_folder
from tests.conftest import tiny_recipe


def _harness():
    spec = importlib.util.spec_from_file_location("table2", REPO / "benchmarks" / "table2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table2_skips_absent_data_and_weights(tmp_path, capsys):
    table2 = _harness()
    make_image_folder(tmp_path / "data" / "brain_tumor_mri", per_class=(2, 2, 2))  # data here, weights not
    assert table2.main(["--output_dir", str(tmp_path / "t2")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skip ")]
    assert len(lines) == 15 and "Traceback" not in "".join(lines)
    brain = [line for line in lines if line.startswith("skip brain_")]
    assert all("local Hub cache" in line for line in brain) and len(brain) == 5
    assert all("no data at data_dir" in line for line in lines if not line.startswith("skip brain_"))
    rows = json.loads((tmp_path / "t2" / "table2.json").read_text())
    assert len(rows) == 15 and all(r["ours"] == [None] * 6 and r["paper"] for r in rows)


def test_table2_runs_what_is_present_beside_the_paper(tmp_path, tiny_vit, capsys):
    table2 = _harness()
    images = make_image_folder(tmp_path / "images")
    extra = tiny_recipe(tmp_path, tiny_vit, images)
    assert table2.main(["--only", "brain_vit", "--also", str(extra), "--output_dir", str(tmp_path / "t2"),
                        "--num_train_epochs", "1", "--n_bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "skip brain_vit" in out and "ran tiny" in out
    rows = json.loads((tmp_path / "t2" / "table2.json").read_text())
    assert [r["recipe"] for r in rows] == ["brain_vit", "tiny"] and rows[0]["ours"] == [None] * 6
    assert rows[1]["paper"] is None and rows[1]["epochs"] == 1 and rows[1]["ours"][2] is not None
    assert "(paper / ours)" in (tmp_path / "t2" / "table2.md").read_text()
    assert table2.label("brain_vit_lowlr", "google/vit-base-patch16-224") == ("Brain Tumor", "ViT*")
    assert table2.label("brain_vit", "other/tiny_vit", "google/vit-base-patch16-224") == ("Brain Tumor", "tiny_vit")
    assert table2.PAPER[("Brain Tumor", "DenseNet")][2] == 99.47
