"""The runner seam's choices, worked by hand: which runner, which resources a job asks for, which refusals."""

from __future__ import annotations

import pytest

from exporter import ExportRequest, Workspace
from exporter.errors import InvalidOptionError, UsageError
from exporter.jobs.cluster import GIB, feasible, job_resources
from exporter.jobs.slots import runner_name
from exporter.request import prepare_export


def test_the_runner_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("AISTUDIO_RUNNER", raising=False)
    assert runner_name() == "local"
    monkeypatch.setenv("AISTUDIO_RUNNER", "Ray")
    assert runner_name() == "ray"
    monkeypatch.setenv("AISTUDIO_RUNNER", "kubernetes")
    with pytest.raises(InvalidOptionError, match="use one of local, ray"):
        runner_name()


def test_target_needs_the_ray_runner(demo_ws, monkeypatch):
    monkeypatch.delenv("AISTUDIO_RUNNER", raising=False)
    with pytest.raises(InvalidOptionError, match="it needs AISTUDIO_RUNNER=ray"):
        prepare_export(Workspace(demo_ws), ExportRequest("demo-classification", "exp-resnet18-shapes",
                                                         options={"target": "gpu:H200"}))
    assert not list((demo_ws / "projects/demo-classification/exports").glob("export-*"))


def test_a_job_asks_for_memory_by_checkpoint_size_a_gpu_for_tensorrt_and_its_target(tmp_path):
    checkpoint = tmp_path / "big.ckpt"
    with open(checkpoint, "wb") as fh:
        fh.truncate(10**9)  # a 1 GB checkpoint (sparse)
    assert job_resources("onnx", {}, checkpoint) == {"CPU": 1.0, "memory": GIB + 6e9}
    assert job_resources("tensorrt", {"target": "gpu:H200"}, checkpoint) == {
        "CPU": 1.0, "memory": GIB + 6e9, "GPU": 1.0, "gpu:H200": 1.0}


def test_a_job_no_alive_node_can_hold_is_refused_with_the_reason():
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0, "memory": 2.0 * GIB}},
             {"Alive": True, "Resources": {"CPU": 1.0, "memory": 8.0 * GIB, "edge": 1.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "memory": 64.0 * GIB, "gpu:H100": 1.0}}]
    feasible(nodes, {"CPU": 1.0, "memory": 4.0 * GIB, "edge": 1.0})  # the second node holds it
    with pytest.raises(UsageError, match=r"^no node offers gpu:H100: no alive node"):
        feasible(nodes, {"CPU": 1.0, "memory": GIB, "gpu:H100": 1.0})  # only a dead node had it
    with pytest.raises(UsageError, match=r"^no single node offers CPU 2, memory 1\.0 GiB \(nodes offer: CPU 1, "
                                         r"memory 2\.0 GiB; CPU 1, memory 8\.0 GiB\)"):
        feasible(nodes, {"CPU": 2.0, "memory": GIB})
