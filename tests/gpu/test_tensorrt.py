"""TensorRT on a GPU: skipped where the tensorrt package or a CUDA GPU is missing (always in CI).

Run on a machine with both: ``python -m pytest tests/gpu -q``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.formats.tensorrt import TensorRtFormat
from tests.helpers import DEMO, TASK_DEMOS

available, reason = TensorRtFormat.is_available()
pytestmark = pytest.mark.skipif(not available, reason=f"TensorRT unavailable here: {reason}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("project, experiment", DEMO + TASK_DEMOS)
def test_engine_builds_validates_and_reloads(demo_ws, project, experiment, precision):
    if precision == "fp16" and project in {"demo-detection", "demo-instance-segmentation", "demo-oriented"}:
        pytest.skip("fp16 is refused for detection tasks (see test_formats)")
    record = export_checkpoint(Workspace(demo_ws), ExportRequest(project, experiment, format="tensorrt",
                                                                 options={"precision": precision})).to_json()
    assert record["status"] == "completed", record["error"]
    assert record["validation"]["verdict"] == "passed", record["validation"]["messages"]
    folder = demo_ws / "projects" / project / "exports" / record["id"]
    meta = json.loads((folder / "model.engine.json").read_text())
    assert meta["tensorrt_version"] and meta["gpu"] and meta["profile"]["max"][0] == 8
    runner = TensorRtFormat().load(folder / "model.engine")
    x = np.random.rand(2, *record["model"]["input_shape"][1:]).astype(np.float32)
    assert [o.shape[0] for o in runner.run({runner.inputs[0]: x})] == [2] * len(runner.outputs)


def test_engine_benchmarks_on_the_gpu_beside_eager_on_the_gpu(demo_ws):
    from exporter.service import benchmark_export

    ws = Workspace(demo_ws)
    record = export_checkpoint(ws, ExportRequest(*DEMO[0], format="tensorrt"))
    entry = benchmark_export(ws, record.id, {"batch_sizes": [1, 8], "seconds": 0.5}).benchmarks[-1]
    assert entry.status == "completed", entry.error
    assert entry.results["file"]["settings"]["device"] == "cuda" and entry.machine["gpu"]
    assert entry.results["pytorch"]["settings"]["device"] == "cuda"
    assert [b["batch"] for b in entry.results["file"]["batches"]] == [1, 8]
