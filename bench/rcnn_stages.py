"""Two-stage detectors on this CPU (``python -m bench.run --only rcnn``): the demo Faster R-CNN and Mask R-CNN

- exported at the settings that make them fast (runtime, precision, RPN proposals per image), each file evaluated on
  the demo's labelled set and benchmarked by the product's own jobs at batch 1 — against PyTorch eager at the same
  setting and against eager as trained;
- stage by stage at batch 1, in PyTorch eager and in the exported ONNX file under ONNX Runtime.

Eager stages: forward hooks time each stage module (backbone body, FPN, RPN head, RoI pooling, box head and
predictor, mask pooling, head and predictor) and wrappers time torchvision's NMS and mask paste; what is left is the
pre-/post-processing between them. ONNX Runtime: its own profiler's per-node times grouped by operator (the
exported graph's node names do not keep module paths), scaled to the run's wall time.
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
# ONNX Runtime's nodes by operator: the graph's node names do not keep module paths.
OPERATOR_STAGES = {"NonMaxSuppression": NMS, "RoiAlign": ROI_ALIGN,
                   **dict.fromkeys(("Conv", "ConvTranspose", "Relu", "MaxPool", "Resize"),
                                   "convolution layers (backbone, FPN, RPN and mask heads)"),
                   **dict.fromkeys(("Gemm", "MatMul", "Flatten"), "fully connected (box head, predictor)"),
                   "TopK": "top-k", "Loop": "mask paste (Loop)"}
OTHER_ORT = "other (shape arithmetic, anchors, box decoding, padding)"
# (label, format, options) per model: as trained first, then the settings that make it fast. OpenVINO cannot
# convert Mask R-CNN's mask-paste Loop, so instance segmentation is ONNX Runtime only.
SETTINGS = {"demo-detection": (("ONNX fp32", "onnx", {}), ("ONNX fp32, 300 proposals", "onnx", {"proposals": 300}),
                               ("ONNX fp32, 100 proposals", "onnx", {"proposals": 100}),
                               ("OpenVINO fp32", "openvino", {}),
                               ("OpenVINO fp32, 300 proposals", "openvino", {"proposals": 300}),
                               ("OpenVINO int8 (NNCF), 300 proposals", "openvino",
                                {"precision": "int8", "proposals": 300}),
                               ("OpenVINO int8, accuracy=auto, 300 proposals", "openvino",
                                {"precision": "int8", "proposals": 300, "accuracy": "auto"}),
                               ("OpenVINO fp16 weights, 100 proposals", "openvino",
                                {"compress_to_fp16": True, "proposals": 100})),
            "demo-instance-segmentation": (("ONNX fp32", "onnx", {}),
                                           ("ONNX fp32, 300 proposals", "onnx", {"proposals": 300}),
                                           ("ONNX fp32, 200 proposals", "onnx", {"proposals": 200}),
                                           ("ONNX fp32, 100 proposals", "onnx", {"proposals": 100}))}
SETTING_SECONDS = 3.0  # timed seconds of the benchmark job per runtime


def bench_rcnn_settings(root: Path) -> list[dict[str, Any]]:
    """Each R-CNN demo at each of ``SETTINGS``: exported, validated and evaluated (the product's export job), then
    benchmarked at batch 1 (its benchmark job: the file and PyTorch eager at the same setting)."""
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.service import benchmark_export

    ws = Workspace(root)
    rows = []
    for project, experiment in MODELS:
        trained: dict[str, Any] = {}
        for label, fmt, options in SETTINGS[project]:
            record = export_checkpoint(ws, ExportRequest(project, experiment, format=fmt, options=options))
            row = {"model": project, "setting": label, "verdict": record.verdict,
                   "decided_by": record.outcome.gate if record.outcome else None}
            if record.status != "completed":
                rows.append({**row, "error": record.error.message if record.error else record.status})
                continue
            bench = benchmark_export(ws, record.id, {"batch_sizes": [1], "seconds": SETTING_SECONDS}).benchmarks[-1]
            evaluation = record.evaluation
            metric = evaluation.primary_metric if evaluation else None
            row.update(metric=metric, pytorch=evaluation.pytorch.get(metric) if evaluation else None,
                       file=(evaluation.file or evaluation.pytorch).get(metric) if evaluation else None,
                       file_ms=bench.figure("file", 1, "p50_ms"), eager_ms=bench.figure("pytorch", 1, "p50_ms"))
            trained = trained or {"eager_ms": row["eager_ms"], "metric": row["pytorch"]}
            row.update(vs_eager=_ratio(row["eager_ms"], row["file_ms"]),
                       vs_trained=_ratio(trained["eager_ms"], row["file_ms"]),
                       change=None if row["file"] is None else round(row["file"] - trained["metric"], 4))
            rows.append(row)
    return rows


def _ratio(slow: float | None, fast: float | None) -> float | None:
    return round(slow / fast, 2) if slow and fast else None


def settings_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["# Two-stage detectors at the settings that make them fast (batch 1, this machine)", "",
             f"Each row: the product's export job (validated; evaluated on the demo's 100 labelled images) and its "
             f"benchmark job ({SETTING_SECONDS:.0f} s per runtime, p50). × eager = against PyTorch eager at the same "
             "setting; × as trained = against eager as trained (1000 proposals); metric change = the file's metric "
             "against PyTorch as trained.", "",
             "| model | setting | verdict | file p50 ms | eager same setting ms | × eager | × eager as trained | "
             "metric | file | change vs as trained |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['setting']} | {r['verdict']}: {r['error'][:100]} | | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['setting']} | {r['verdict']} | {_ms(r['file_ms'])} | {_ms(r['eager_ms'])} |"
                     f" {_times(r['vs_eager'])} | {_times(r['vs_trained'])} | {r['metric'] or '—'} | "
                     f"{_num(r['file'], '.4f')} | {_num(r['change'], '+.4f')} |")
    return [*lines, ""]


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _num(value: float | None, form: str) -> str:
    return "—" if value is None else format(value, form)


def bench_rcnn(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Both R-CNN demos trained in ``root``: their fast settings, then their stages."""
    from demo import build_demo

    build_demo(root, projects=[project for project, _ in MODELS])
    return {"settings": bench_rcnn_settings(root), "stages": bench_rcnn_stages(root)}


def rcnn_bench_markdown(result: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [*settings_markdown(result["settings"]), *rcnn_markdown(result["stages"])]


def bench_rcnn_stages(root: Path) -> list[dict[str, Any]]:
    """Per-stage milliseconds (median of ``RUNS``) for each R-CNN demo trained in ``root``, eager and ONNX
    Runtime."""
    from exporter import ExportRequest, Workspace, export_checkpoint

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
    node_time: dict[str, float] = defaultdict(float)
    runs = [e for e in events if e.get("name") == "model_run"][3:]
    first = runs[0]["ts"] if runs else 0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < first:
            continue
        operator = event.get("args", {}).get("op_name", "")
        node_time[OPERATOR_STAGES.get(operator, OTHER_ORT)] += event["dur"]
    total = 1000 * statistics.median(totals)
    measured = sum(node_time.values()) or 1.0  # the profiler's node times, scaled to the median run's wall time
    return {stage: total * time_us / measured for stage, time_us in node_time.items()}, total


def rcnn_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["# Two-stage detectors, stage by stage (batch 1, this machine)", "",
             f"Median of {RUNS} runs after 3 warm-ups; eager stages by forward hooks and timed NMS / mask paste, "
             "ONNX Runtime's by its profiler's node times grouped by operator, scaled to the median profiled run "
             "(profiling slows ONNX Runtime, the Loop that pastes masks most: shares, not the benchmark's speed).", ""]
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
