"""An OpenVINO Model Server repository: ``models/<name>/1/<files>`` and ``config.json`` (ONNX and OpenVINO IR).

``base_path`` is relative to ``config.json`` (OVMS resolves it there), so the folder can be mounted anywhere:
``docker run -v $PWD:/config -p 8000:8000 openvino/model_server --config_path /config/config.json --rest_port 8000``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from exporter.deploy.bundle import Bundle


def write(bundle: Bundle, out: Path) -> Path:
    version = out / "models" / bundle.name / "1"
    version.mkdir(parents=True)
    for path in bundle.files:
        shutil.copy2(path, version / path.name)
    (out / "config.json").write_text(json.dumps(config(bundle), indent=2) + "\n")
    return out


def config(bundle: Bundle) -> dict:
    """``config.json``: one model on CPU with the latency hint; its batch (fixed or dynamic) is the file's own."""
    model = {"name": bundle.name, "base_path": f"models/{bundle.name}", "target_device": "CPU",
             "plugin_config": {"PERFORMANCE_HINT": "LATENCY"}}
    return {"model_config_list": [{"config": model}]}
