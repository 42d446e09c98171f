"""The "Run it" snippet of every available format, run as a user would: copied into a fresh
``python -I`` process beside the exported file and an image, it prints PyTorch's top-1 class."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.checkpoint import load_checkpoint
from exporter.formats import get_available_formats
from exporter.pipeline import build_wrapped
from exporter.report import usage_snippet
from exporter.service import prepare_export, run_export
from exporter.validation import load_images

PROJECT, EXPERIMENT = "demo-classification", "exp-resnet18-shapes"
# Core ML predicts on macOS only (its exports here are "unverified"; test_edge_formats checks them).
AVAILABLE = [pytest.param(row["name"], marks=pytest.mark.skipif(
                 row["name"] == "coreml" and sys.platform != "darwin", reason="Core ML predicts on macOS only"))
             for row in get_available_formats("classification") if row["available"]]


@pytest.fixture(scope="module")
def pytorch_top1(demo_template):
    """PyTorch's top-1 class name for each of the project's sample images."""
    project = Workspace(demo_template).project(PROJECT)
    experiment = project.experiment(EXPERIMENT)
    spec, module = build_wrapped(load_checkpoint(experiment.checkpoint("best").path), experiment)
    samples = project.sample_images()[:3]
    with torch.no_grad():
        (logits,) = module(load_images(samples, spec.input_size, spec.normalization))
    return {path: spec.class_names[int(row.argmax())] for path, row in zip(samples, logits, strict=True)}


@pytest.mark.parametrize("format_name", AVAILABLE)
def test_run_it_snippet_prints_pytorch_top1(demo_ws, tmp_path, pytorch_top1, format_name):
    record = export_checkpoint(Workspace(demo_ws), ExportRequest(PROJECT, EXPERIMENT, format=format_name))
    assert record.status == "completed", record.error
    folder = Workspace(demo_ws).project(PROJECT).exports_dir / record.id
    snippet = usage_snippet(record)
    for sample, expected in pytorch_top1.items():
        user_dir = tmp_path / sample.stem
        user_dir.mkdir()
        for entry in record.files:  # what the download hands over
            shutil.copy(folder / entry.name, user_dir / entry.name)
        shutil.copy(sample, user_dir / "image.png")
        run = subprocess.run([sys.executable, "-I", "-c", snippet], cwd=user_dir, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, f"{format_name} snippet failed:\n{snippet}\n{run.stderr[-2000:]}"
        assert run.stdout.split()[0] == expected, (format_name, sample.name, run.stdout)


def test_int8_progress_names_its_stage(demo_ws):
    """Every stage an export reports is declared, so the bar never drops back to 0 (int8 quantizes)."""
    seen = []
    request = ExportRequest(PROJECT, EXPERIMENT, options={"precision": "int8", "quantization": "static"})

    pending = prepare_export(Workspace(demo_ws), request)
    record = run_export(Workspace(demo_ws), PROJECT, pending.id,
                        on_progress=lambda r: seen.append((r.progress.stage, r.progress.fraction)))
    assert record.status == "completed", record.error
    stages = [stage for stage, _ in seen]
    assert "quantize" in stages and stages.index("quantize") > stages.index("simplify")
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
