"""The CLI as a user runs it: real subprocesses, exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from demo import DEMO_PROJECTS
from tests.conftest import read_index
from tests.helpers import cli


@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory, demo_template):
    """A workspace whose anomaly project ``python -m exporter demo`` built itself (the quickest to train,
    labelled set included); the other demo projects are linked from the session's template (training
    them all again costs minutes)."""
    root = tmp_path_factory.mktemp("cli-ws")
    result = cli("demo", "--project", "demo-anomaly", workspace=root)
    assert result.returncode == 0, result.stderr
    assert "built demo-anomaly" in result.stderr + result.stdout
    assert (root / "projects" / "demo-anomaly" / "data" / "val" / "good").is_dir()
    for project in (demo_template / "projects").iterdir():
        if not (root / "projects" / project.name).exists():
            shutil.copytree(project, root / "projects" / project.name, copy_function=os.link)
    return root


def test_help_and_formats():
    assert cli("--help").returncode == 0
    result = cli("formats", "--json")
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == {"onnx", "torchscript", "openvino", "tensorrt"}
    assert next(r for r in rows if r["name"] == "onnx")["available"] is True
    assert next(r for r in rows if r["name"] == "tensorrt")["reason"]


def test_list(cli_ws):
    projects = json.loads(cli("list", "projects", "--json", workspace=cli_ws).stdout)
    assert {p["id"] for p in projects} == set(DEMO_PROJECTS)
    experiments = json.loads(cli("list", "experiments", "--project", "demo-anomaly", "--json", workspace=cli_ws).stdout)
    assert {e["id"] for e in experiments} == {"exp-padim-resnet18", "exp-autoencoder"}
    assert {c["name"] for c in experiments[0]["checkpoints"]} == {"best", "last"}


def test_export_json_exit_0(cli_ws):
    result = cli("export", "--project", "demo-classification", "--experiment", "exp-resnet18-shapes",
                 "--format", "onnx", "--json", workspace=cli_ws)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed" and record["validation"]["passed"] is True
    assert record["validation"]["batch_sizes"] == [1, 2]
    assert record["validation"]["max_diff"] <= record["validation"]["tolerance"] * 100
    listed = json.loads(cli("list", "exports", "--json", workspace=cli_ws).stdout)
    assert record["id"] in [e["id"] for e in listed]


def test_export_last_checkpoint_with_options(cli_ws):
    result = cli("export", "--project", "demo-regression", "--experiment", "exp-resnet18-center",
                 "--checkpoint", "last", "--opset", "13", "--no-simplify", "--input-shape", "1,3,64,64",
                 "--option", "exporter=legacy", workspace=cli_ws)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("✅ export-") and "validation passed" in result.stdout


@pytest.mark.parametrize("args, text", [
    (["--opset", "3"], "out of range"),
    (["--opset", "99"], "out of range"),
    (["--input-shape", "1,3,-4,5"], "positive integers"),
    (["--input-shape", "1,3,a,5"], "positive integers"),
    (["--option", "bogus=1"], "valid options"),
    (["--format", "tensorrt"], "unavailable"),
    (["--experiment", "missing"], "no experiment 'missing'"),
])
def test_bad_arguments_exit_2_with_one_line(cli_ws, args, text):
    base = ["export", "--project", "demo-classification", "--experiment", "exp-resnet18-shapes"]
    result = cli(*base, *args, workspace=cli_ws)
    assert result.returncode == 2
    assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_failed_export_exits_1(cli_ws):
    ckpt = cli_ws / "projects/demo-regression/experiments/exp-resnet18-center/checkpoints/last.ckpt"
    original = ckpt.read_bytes()
    try:
        ckpt.write_bytes(original[:500])
        result = cli("export", "--project", "demo-regression", "--experiment", "exp-resnet18-center",
                     "--checkpoint", "last", workspace=cli_ws)
    finally:
        ckpt.write_bytes(original)
    assert result.returncode == 1
    assert "CheckpointError" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    newest = max(read_index(cli_ws, "demo-regression"), key=lambda e: e["created_at"])
    assert newest["status"] == "failed" and newest["checkpoint"] == "last"


def test_missing_required_argument_exits_2():
    result = cli("export", "--project", "p")
    assert result.returncode == 2 and "--experiment" in result.stderr




def test_detector_bad_options_exit_2(cli_ws):
    base = ["export", "--project", "demo-detection", "--experiment", "exp-fasterrcnn-resnet18-fpn"]
    for args, text in ((["--opset", "10"], "opset ≥ 11"), (["--option", "max_detections=0"], "max_detections"),
                       (["--option", "resolution=stride"], "Unknown option 'resolution'")):
        result = cli(*base, *args, workspace=cli_ws)
        assert result.returncode == 2 and text in result.stderr, result.stderr
