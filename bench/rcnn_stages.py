"""Where a two-stage detector's time goes: the demo Faster R-CNN and Mask R-CNN at batch 1, stage by stage, in
PyTorch eager and in the exported ONNX file under ONNX Runtime (``python -m bench.run --only rcnn``).

Eager: forward hooks time each stage module (backbone body, FPN, RPN head, RoI pooling, box head and predictor,
mask pooling, head and predictor) and wrappers time torchvision's NMS and mask paste; what is left is the
pre-/post-processing between them. ONNX Runtime: its own profiler's per-node times, each node counted in the stage
its name says (the exporter names nodes after the module path: ``/backbone/body/...``, ``/rpn/...``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

MODELS = (("demo-detection", "exp-fasterrcnn-resnet18-fpn"),
          ("demo-instance-segmentation", "exp-maskrcnn-resnet18-fpn"))
RUNS = 20
# Stage of an eager module (its attribute path in the torchvision model) and of an ONNX node (its name's prefix).
STAGES = (("backbone", "backbone.body"), ("FPN", "backbone.fpn"), ("RPN head", "rpn.head"),
          ("box head", "roi_heads.box_head"), ("box predictor", "roi_heads.box_predictor"),
          ("mask head", "roi_heads.mask_head"), ("mask predictor", "roi_heads.mask_predictor"))
NMS, ROI_ALIGN, PASTE = "NMS (RPN + detections)", "RoI align (boxes + masks)", "mask paste"
# ONNX operators that are a stage of their own wherever they sit.
OPERATOR_STAGES = {"NonMaxSuppression": NMS, "RoiAlign": ROI_ALIGN}


def bench_rcnn_stages(root: Path) -> list[dict[str, Any]]:
    """Per-stage milliseconds (median of ``RUNS``) for each R-CNN demo, eager and ONNX Runtime."""
    from demo import build_demo
    from exporter import ExportRequest, Workspace, export_checkpoint

    build_demo(root, projects=[project for project, _ in MODELS])
    rows = []
    for project, experiment in MODELS:
        record = export_checkpoint(Workspace(root), ExportRequest(project, experiment, options={"evaluate": False}))
        onnx_file = root / "projects" / project / "exports" / record.id / "model.onnx"
        eager, total_eager = _eager_stages(root, project, experiment)
        ort_stages, total_ort = _ort_stages(onnx_file, tuple(record.model.input_shape))
        rows.append({"model": project, "eager_ms": eager, "eager_total_ms": total_eager, "ort_ms": ort_stages,
                     "ort_total_ms": total_ort})
    return rows


def _eager_stages(root: Path, project: str, experiment: str) -> tuple[dict[str, float], float]:
    import torch

    from exporter import Workspace
    from exporter.checkpoint import load_checkpoint
    from exporter.pipeline import build_wrapped

    exp = Workspace(root).project(project).experiment(experiment)
    _, wrapped = build_wrapped(load_checkpoint(exp.checkpoint("best").path), exp)
    model = wrapped.model
    times: dict[str, list[float]] = defaultdict(list)
    started: dict[str, float] = {}
    for label, path in STAGES:
        module = model.get_submodule(path) if _has(model, path) else None
        if module is None:
            continue
        module.register_forward_pre_hook(lambda *_, label=label: started.__setitem__(label, time.perf_counter()))
        module.register_forward_hook(lambda *_, label=label: times[label].append(time.perf_counter() - started[label]))
    patched = _timed_functions(times)
    x = torch.rand(1, *exp.model["input_size"])
    totals = []
    try:
        with torch.inference_mode():
            for run in range(RUNS + 3):
                if run == 3:  # warm-up done
                    times.clear()
                start = time.perf_counter()
                wrapped(x)
                if run >= 3:
                    totals.append(time.perf_counter() - start)
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    per_run = {label: 1000 * sum(values) / RUNS for label, values in times.items()}
    total = 1000 * statistics.median(totals)
    per_run["other (transform, anchors, box decoding, top-k, padding)"] = max(0.0, total - sum(per_run.values()))
    return per_run, total


def _timed_functions(times: dict[str, list[float]]) -> list[tuple[Any, str, Any]]:
    """torchvision's NMS, RoI align and mask paste, timed where the exported graph's module calls them."""
    import torchvision
    from torchvision.models.detection import roi_heads

    patched = []
    for owner, name, label in ((torchvision.ops, "nms", NMS), (torchvision.ops, "roi_align", ROI_ALIGN),
                               (roi_heads, "paste_masks_in_image", PASTE)):
        original = getattr(owner, name)

        def timed(*args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                times[_label].append(time.perf_counter() - start)

        patched.append((owner, name, original))
        setattr(owner, name, timed)
    return patched


def _has(model: Any, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def _ort_stages(path: Path, shape: tuple[int, ...]) -> tuple[dict[str, float], float]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_name("ort-profile"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = session.get_inputs()[0].name
    totals = []
    for run in range(RUNS + 3):
        start = time.perf_counter()
        session.run(None, {name: x})
        if run >= 3:
            totals.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_stage: dict[str, float] = defaultdict(float)
    runs = [e for e in events if e.get("name") == "model_run"][3:]
    first = runs[0]["ts"] if runs else 0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < first:
            continue
        per_stage[_stage_of(event["name"], event.get("args", {}).get("op_name", ""))] += event["dur"] / 1000 / RUNS
    return dict(per_stage), 1000 * statistics.median(totals)


def _stage_of(node: str, operator: str) -> str:
    """The stage of an ONNX node: by its operator (NMS, RoiAlign), else by the module path in its name."""
    if operator in OPERATOR_STAGES:
        return OPERATOR_STAGES[operator]
    text = node.replace("/", ".").replace("_", ".")
    for label, path in STAGES:
        if path.replace("_", ".") in text:
            return label
    if "rpn" in text:
        return "RPN (anchors, decoding, top-k)"
    if "roi.heads" in text:
        return "RoI heads (decoding, top-k, paste)"
    return "other (transform, padding)"


def rcnn_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["# Two-stage detectors, stage by stage (batch 1, this machine)", "",
             f"Median of {RUNS} runs after 3 warm-ups; eager stages by forward hooks and timed NMS / mask paste, "
             "ONNX Runtime stages by its profiler's node times grouped by the module path in each node's name.", ""]
    for row in rows:
        lines += [f"## {row['model']}", "", "| stage | eager ms | share | ONNX Runtime ms | share |",
                  "|---|---|---|---|---|"]
        labels = list(dict.fromkeys([*row["eager_ms"], *row["ort_ms"]]))
        for label in labels:
            eager, ort_ms = row["eager_ms"].get(label), row["ort_ms"].get(label)
            lines.append(f"| {label} | {_ms(eager)} | {_share(eager, row['eager_total_ms'])} | {_ms(ort_ms)} | "
                         f"{_share(ort_ms, row['ort_total_ms'])} |")
        lines += [f"| **total** | **{row['eager_total_ms']:.1f}** | | **{row['ort_total_ms']:.1f}** | |", ""]
    return lines


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _share(value: float | None, total: float) -> str:
    return "—" if value is None or not total else f"{100 * value / total:.0f} %"
