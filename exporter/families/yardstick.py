"""A library's own exporter beside ours, on the export's record (``yardstick``).

anomalib exports its models itself (``Engine.export`` calls the module's ``to_onnx`` / ``to_openvino``: the
formats' ``library_exporters``). When an anomalib model is exported to ONNX or OpenVINO here, anomalib's exporter
writes its file of the same model too, and both files run the same images — ``IMAGES`` spread over the export's
validation inputs — one image at a time: each file's size, the largest difference of its image score and of its
anomaly map from anomalib's torch module, and its latency at batch 1 (the mean of ``RUNS`` calls). A file of
anomalib's that cannot run them is reported with its error, as a finding; a yardstick that breaks is reported, never
raised: the export stands either way.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporter.errors import ExportError, one_line, resource_error

IMAGES = 4  # validation inputs both files run
RUNS = 10  # single-image calls timed per file
OURS = "AI Studio Export"
_NAMES = {"pred_score": "score", "score": "score", "anomaly_map": "anomaly_map"}  # anomalib's names and ours


def beside_anomalib(module: nn.Module, method: str, ours: list[Path], pool: torch.Tensor,
                    workdir: Path) -> dict[str, Any]:
    """The file anomalib's ``method`` (``to_onnx``, ``to_openvino``) writes of ``module`` (our wrapper of an
    anomalib model) beside ``ours`` (the export's files, the model first), as the record's ``yardstick``. The
    anomalib module is the one this export ran, its thresholds stored as anomalib reads them
    (``outputs._resolve_thresholds``): its file computes what ``Engine.export`` writes."""
    import anomalib

    model = module.model
    x = pool[::max(1, len(pool) // IMAGES)][:IMAGES].float()  # spread: a labelled set's normal and defective
    folder = workdir / "anomalib-export"
    try:
        with torch.no_grad():
            want = model(x)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        theirs = Path(getattr(model, method)(folder, input_size=size))
        beside = [p for p in folder.rglob("*") if p.suffix in (".bin", ".data") and p != theirs]  # weights files
        rows = [_row(name, files, x, want) for name, files in (("anomalib", [theirs, *beside]), (OURS, ours))]
    except Exception as exc:  # noqa: BLE001 - the export stands; say why the yardstick broke
        error = resource_error(exc, "compare") or ExportError(f"anomalib's exporter failed: {one_line(exc)}",
                                                              stage="compare")
        return {"status": "failed", "exporter": f"anomalib {anomalib.__version__}", "error": error.to_dict()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    exporter = f"anomalib {anomalib.__version__} ({method}, as Engine.export writes it)"
    return {"status": "completed", "exporter": exporter, "images": len(x), "rows": rows}


def _row(exporter: str, files: list[Path], x: torch.Tensor, want: Any) -> dict[str, Any]:
    size = sum(f.stat().st_size for f in files)
    return {"exporter": exporter, "file": files[0].name, "size_mb": round(size / 1e6, 2),
            **_compared(files[0], x, want)}


def _compared(path: Path, x: torch.Tensor, want: Any) -> dict[str, Any]:
    """One file run image by image: max |Δ| of score and map against ``want``, ms per image at batch 1."""
    try:
        run = _runner(path)
        outputs = [run(x[i:i + 1].numpy()) for i in range(len(x))]
    except Exception as exc:  # noqa: BLE001 - a file that cannot run the images is a finding, reported
        return {"error": one_line(exc)[:200]}
    started = time.perf_counter()
    for _ in range(RUNS):
        run(x[:1].numpy())
    return {"max_diff_score": _max_diff([o["score"] for o in outputs], want.pred_score),
            "max_diff_map": _max_diff([o["anomaly_map"] for o in outputs], want.anomaly_map),
            "ms_batch1": round((time.perf_counter() - started) * 1000 / RUNS, 2)}


def _runner(path: Path):
    """``run(x) → {"score", "anomaly_map"}`` for an ONNX or OpenVINO file, whichever names its outputs use."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed, outputs = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
        return lambda x: {_NAMES[n]: v for n, v in zip(outputs, session.run(None, {feed: x}), strict=True)
                          if n in _NAMES}
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # not bf16
    outputs = [next(iter(o.get_names())) for o in compiled.outputs]
    return lambda x: {_NAMES[n]: v for n, v in zip(outputs, compiled(x).values(), strict=True) if n in _NAMES}


def _max_diff(got: list[np.ndarray], want: torch.Tensor) -> float:
    stacked = np.concatenate([np.asarray(g).reshape(1, -1) for g in got])
    return float(np.abs(stacked - want.numpy().reshape(len(got), -1)).max())
