"""A task is one module: this file alone defines a toy task — its network, options, outputs and
snippet — and exports it end to end through the CLI, the HTTP API and the Export page.

The CLI, the server and its workers are other processes: they load the task the way a team adds
its own, by naming this module in ``$AISTUDIO_TASK_MODULES``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from exporter.options import OptionSpec
from exporter.tasks import Task, TaskTraits, register_task
from testkit.models import lively_init, write_experiment
from testkit.server import running_server, wait_for
from tests.conftest import ROOT
from tests.helpers import cli

TASK, MODULE = "toy_brightness", __name__


class TinyNet(nn.Module):
    """Image → two numbers: a learned brightness and a learned contrast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class Scaled(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        return (self.model(input) * self.scale,)


@register_task
class BrightnessTask(Task):
    traits = TaskTraits(TASK, outputs=("brightness",),
                        options=(OptionSpec("scale", "float", 1.0, "Multiply both outputs by this."),))

    def architectures(self) -> list[str]:
        return ["tinynet"]

    def build(self, spec: Any) -> nn.Module:
        self.check_architecture(spec.architecture)
        return TinyNet()

    def wrap(self, model: nn.Module, spec: Any, options: dict[str, Any] | None = None) -> nn.Module:
        return Scaled(model, float((options or {}).get("scale") or 1.0)).eval()

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return [f"print('brightness, contrast:', {outputs[0]}[0])"]


@pytest.fixture
def toy_ws(tmp_path, monkeypatch):
    monkeypatch.setenv("AISTUDIO_TASK_MODULES", MODULE)
    write_experiment(tmp_path, lively_init(TinyNet()).state_dict(), project_id="toy", task=TASK,
                     hparams={"task": TASK, "architecture": "tinynet", "input_size": [3, 32, 32]})
    return tmp_path


def test_toy_task_through_the_cli(toy_ws):
    result = cli("export", "--project", "toy", "--experiment", "exp", "--option", "scale=2", "--json",
                 workspace=toy_ws)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["validation"]["verdict"] == "passed" and record["options"]["scale"] == 2.0
    assert [o["name"] for o in record["model"]["outputs"]] == ["brightness"]
    bad = cli("export", "--project", "toy", "--experiment", "exp", "--option", "scael=2", workspace=toy_ws)
    assert bad.returncode == 2 and "scale" in bad.stderr  # the task's option is among the valid ones


def test_toy_task_through_the_api(toy_ws):
    with running_server(toy_ws) as base, httpx.Client(base_url=base, timeout=60) as api:
        options = {o["name"] for row in api.get("/api/formats", params={"task": TASK}).json() for o in row["options"]}
        assert "scale" in options
        started = api.post("/api/export", json={"project_id": "toy", "experiment_id": "exp", "format": "torchscript",
                                            "options": {"scale": 0.5}})
        assert started.status_code == 202, started.text
        record = wait_for(api, started.json()["id"])
    assert record["status"] == "completed" and record["validation"]["verdict"] == "passed", record


def test_toy_task_on_the_export_page(toy_ws, monkeypatch):
    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(toy_ws))
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    assert any(w.label == "scale" for w in at.text_input)  # the task's option, with no page code for it
    at.button(key="export").click().run()
    export_id = at.query_params["export"]
    deadline = time.monotonic() + 180
    while not any(m.value.startswith(f"#### {export_id}") for m in at.markdown):  # drawn once finished
        assert time.monotonic() < deadline, "no result shown"
        time.sleep(0.5)
        at.run()
    assert any(m.value.startswith(f"#### {export_id}") and "validation passed" in m.value for m in at.markdown)
    assert any("brightness, contrast" in c.value for c in at.code)


@pytest.fixture
def nms_task():
    """A toy detector task whose graph needs NMS — declared in the capability vocabulary, nothing else."""
    from exporter import capabilities
    from exporter.tasks.registry import _TASKS

    @register_task
    class ToyNmsTask(BrightnessTask):
        traits = TaskTraits("toy_nms_boxes", outputs=("boxes",), needs=frozenset({capabilities.NMS}))

    yield ToyNmsTask.traits.name
    _TASKS.pop(ToyNmsTask.traits.name)


def test_a_task_needing_nms_is_refused_by_every_format_without_it(nms_task):
    """No format file names the task: ExecuTorch, LiteRT and ncnn refuse it for the operator they lack, the
    formats that carry NMS take it — in the availability rows, before anything runs."""
    from exporter.errors import FormatUnavailableError
    from exporter.formats import get_available_formats, get_format

    rows = {r["name"]: r for r in get_available_formats(nms_task)}
    for name, operator in (("executorch", "torchvision::nms"), ("litert", "torchvision::nms"),
                           ("ncnn", "torchvision::nms")):
        why = get_format(name, require_available=False).cannot_carry(nms_task)
        assert why.startswith(f"cannot carry {nms_task} models: ") and operator in why, why
        assert operator in rows[name]["reason"], rows[name]
        with pytest.raises(FormatUnavailableError, match=operator):
            get_format(name, require_available=False).check_task(nms_task, {})
    for name in ("onnx", "torchscript", "openvino", "pt2", "coreml"):  # they carry NMS (Core ML: not its shapes)
        assert not get_format(name, require_available=False).cannot_carry(nms_task)
