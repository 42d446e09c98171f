"""The CLI as a user runs it: real subprocesses, exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, read_index


def cli(*args, workspace=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "exporter", *args]
    if workspace:
        cmd += ["--workspace", str(workspace)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory):
    """A workspace built by ``python -m exporter demo`` itself."""
    root = tmp_path_factory.mktemp("cli-ws")
    result = cli("demo", workspace=root)
    assert result.returncode == 0, result.stderr
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
    assert {p["id"] for p in projects} == {"demo-classification", "demo-regression", "demo-anomaly"}
    experiments = json.loads(cli("list", "experiments", "--project", "demo-anomaly", "--json", workspace=cli_ws).stdout)
    assert {e["id"] for e in experiments} == {"exp-padim-resnet18", "exp-autoencoder"}
    assert set(experiments[0]["checkpoints"]) == {"best", "last"}


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
