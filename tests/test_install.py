"""Installing hf_medtl beside a researcher's own torch keeps that torch: pyproject states ranges, and pip, resolving
against an environment that holds another supported build (a CUDA 13 torch 2.11, a CPU-only 2.7), installs hf_medtl
alone. The other torch is a distribution's metadata placed first on the path, which is all pip's resolver reads;
`--no-index` makes any replacement impossible to hide (it would have to download one, and fails instead)."""
import json
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO


def _dist(site, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("")


def _dry_run(site) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--quiet", "--report", "-", "-e", str(REPO)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def test_torch_is_a_range_not_a_pin():
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    for name in ("torch", "torchvision"):
        [req] = [r for r in deps if r.name == name]
        assert all(s.operator == ">=" for s in req.specifier), req


@pytest.mark.parametrize("torch, torchvision", [("2.11.0+cu130", "0.26.0+cu130"), ("2.7.1+cpu", "0.22.1+cpu")])
def test_an_install_beside_another_torch_keeps_it(tmp_path, torch, torchvision):
    _dist(tmp_path, "torch", torch)
    _dist(tmp_path, "torchvision", torchvision)
    proc = _dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installs = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(proc.stdout)["install"]]
    assert installs == [("hf_medtl", "0.1.0")], installs  # torch and everything else stay as they are


def test_a_torch_below_the_range_would_be_replaced(tmp_path):
    """The check above can fail: a torch older than the bound is not accepted (pip would have to fetch another)."""
    _dist(tmp_path, "torch", "2.5.0")
    proc = _dry_run(tmp_path)
    assert proc.returncode != 0 and "torch" in proc.stderr
