"""`routeiq crds`: to stdout as one YAML stream (for `kubectl apply -f -`), or one file per CRD with --out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from routeiq_operator.crds import render_crds

ROOT = Path(__file__).resolve().parents[2]
ROUTEIQ = str(Path(sys.executable).parent / "routeiq")


def test_crds_without_out_prints_every_crd_as_one_stream_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run([ROUTEIQ, "crds"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["spec"]["names"]["kind"] for d in documents] == [
        "RouteIQGateway",
        "RoutingExperiment",
        "ModelArtifact",
    ]
    assert documents == [yaml.safe_load(text) for text in render_crds().values()]
    # the committed CRDs are the same objects
    assert documents == [yaml.safe_load((ROOT / "crds" / name).read_text()) for name in render_crds()]


def test_crds_with_out_writes_one_file_per_crd(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    result = subprocess.run([ROUTEIQ, "crds", "--out", str(out)], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(out / name) for name in render_crds()]
    assert {p.name: p.read_text() for p in out.iterdir()} == render_crds()


def test_crds_help_names_both_forms() -> None:
    result = subprocess.run([ROUTEIQ, "crds", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "routeiq crds | kubectl apply -f -" in text
    assert "--out" in text
    assert "stdout" in text
