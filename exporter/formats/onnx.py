"""ONNX export with torch.onnx, checked, simplified and verified by running it in ONNX Runtime.

Exporter choice (docs/findings.md): the legacy TorchScript-based exporter is 3–29× faster and
handles detectors; dynamo handles some models legacy cannot. ``exporter=auto`` tries legacy
first, and every attempt must survive ``onnx.checker``, an opset read-back and a smoke run
at batch 2 (when the batch is dynamic) before it is accepted; otherwise the next is tried.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import ExporterError, InvalidOptionError, one_line, resource_error
from exporter.formats.registry import (
    FP16_TOLERANCE,
    GRAPH_DIAGNOSIS,
    INT8_TOLERANCE,
    REFERENCE_FILE,
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    register_format,
)
from exporter.options import OptionSpec

LEGACY_OPSETS = (7, 20)
DYNAMO_OPSETS = (18, 23)
DEFAULT_OPSET = 17
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf cannot serialise a ModelProto past 2 GiB
MODEL_FILE = "model.onnx"
SELECTION_OPS = {"TopK", "NonMaxSuppression"}  # fp16 keeps them and all they feed in float (see _to_fp16)
ACCURACY_OPTION = OptionSpec(
    "accuracy", "choice", "fixed",
    "auto: while validation (or the metric gate on data/val) fails, keep the layers that add the most error "
    "in float and convert again (a few rounds); fixed: convert every layer once.",
    choices=("fixed", "auto"), label="Keep accuracy automatically", applies_when=(("precision", ("fp16", "int8")),))


class OrtRunner:
    """An ONNX Runtime CPU session over an exported file."""

    def __init__(self, path: Path, options: Any = None) -> None:
        import onnxruntime as ort

        options = options or ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; returns outputs in graph order."""
        return self.session.run(None, inputs)

    def close(self) -> None:
        self.session = None


@register_format("onnx", display_name="ONNX", suffix=".onnx")
class OnnxFormat(ExportFormat):
    """ONNX via torch.onnx (legacy or dynamo), simplified with onnxsim, run with ONNX Runtime."""

    stages = ("export", "simplify", "quantize")
    packages = ("onnx", "onnxruntime")
    diagnosis = GRAPH_DIAGNOSIS
    runtime_modules = ("onnxruntime",)
    triton, triton_file, ovms = ("platform", "onnxruntime_onnx"), "model.onnx", True
    library_exporters = {"anomalib": "to_onnx"}  # what anomalib's Engine.export(ExportType.ONNX) calls
    reduced_precision = {("precision", "fp16"): FP16_TOLERANCE, ("precision", "int8"): INT8_TOLERANCE}
    variants = (("fp32", {}), ("fp16", {"precision": "fp16"}),
                ("int8 dynamic", {"precision": "int8", "quantization": "dynamic"}),
                ("int8 static", {"precision": "int8", "quantization": "static"}))
    format_options = (
        OptionSpec("opset_version", "int", DEFAULT_OPSET,
                   "ONNX opset; legacy exporter 7–20, dynamo 18–23.",
                   minimum=LEGACY_OPSETS[0], maximum=DYNAMO_OPSETS[1], label="ONNX opset", advanced=True),
        OptionSpec("simplify", "bool", True, "Simplify the graph with onnxsim (kept unsimplified if it fails).",
                   label="Simplify the graph (onnxsim)", advanced=True),
        OptionSpec("exporter", "choice", "auto", "torch.onnx path: auto tries legacy, then dynamo.",
                   choices=("auto", "legacy", "dynamo"), label="Exporter (torch.onnx path)", advanced=True),
        OptionSpec("external_data", "choice", "auto",
                   "Store weights in model.onnx.data: auto (only past 2 GB), always, never.",
                   choices=("auto", "always", "never"), label="Weights in a separate .data file", advanced=True),
        OptionSpec("precision", "choice", "fp32",
                   "fp16 halves the file (float32 inputs/outputs kept); int8 quarters it.",
                   choices=("fp32", "fp16", "int8"), label="Precision"),
        OptionSpec("quantization", "choice", "dynamic",
                   "int8 only: dynamic (weights only: ¼ size, about FP32 speed on CNNs), or static (QDQ "
                   "calibrated on samples + synthetic images: ¼ size and ~3× faster than FP32 on x86).",
                   choices=("dynamic", "static"), label="INT8 quantization", applies_when=(("precision", ("int8",)),)),
        OptionSpec("calibration_samples", "int", 16, "int8 static: images used to calibrate activations.",
                   minimum=1, maximum=512, label="Calibration images",
                   applies_when=(("precision", ("int8",)), ("quantization", ("static",)))),
        ACCURACY_OPTION,
    )

    def check_options(self, options: dict[str, Any]) -> None:
        exporter_order(options["exporter"], options["opset_version"])
        check_accuracy_option(options)
        if options["precision"] == "int8" and options["external_data"] == "always":
            raise InvalidOptionError("precision=int8 files are small; use external_data=auto or never.")

    def load(self, path: Path, model: dict[str, Any]) -> OrtRunner:
        return OrtRunner(path)

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """A CPU session with every graph optimisation on and ``threads`` intra-op threads."""
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        return Deployed(OrtRunner(path, session_options), {
            "runtime": f"onnxruntime {ort.__version__}", "provider": "CPUExecutionProvider",
            "graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": threads,
            "precision": options["precision"]})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        input_name = (model.get("inputs") or [{"name": "input"}])[0]["name"]
        return Usage(imports=("import onnxruntime as ort",),
                     load=(f'session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])',),
                     run=(f'outputs = session.run(None, {{"{input_name}": x}})',))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        """Export, simplify, annotate, save and smoke-run; see the module docstring."""
        opset = job.options["opset_version"]
        failures: list[str] = []
        order = exporter_order(job.options["exporter"], opset)
        for exporter in order:
            try:
                return self._attempt(exporter, job, workdir, progress, failures)
            except ExporterError as exc:
                failures.append(f"{exporter}: {exc.message}")
                _clear(workdir)
        where = _explained(job) if "legacy" in order else ""
        raise ExporterError(
            f"torch.onnx could not export {job.spec.architecture} at opset {opset} — {where}"
            + " | ".join(failures), stage="export")

    def _attempt(self, exporter: str, job: ExportJob, workdir: Path, progress: Progress,
                 earlier: list[str]) -> ExportArtifact:
        warn = [f"exporter {e}" for e in earlier]
        progress("export")
        import onnx

        raw, output_shapes, rewrites = _torch_export(exporter, job, workdir / "raw")
        warn.extend(rewrites)
        if job.options["simplify"]:
            progress("simplify")
            model = simplify_file(raw, warn)
        else:
            model = onnx.load(str(raw))
        _check_opset(model, job.options["opset_version"], exporter)  # onnxsim keeps the file's opset
        _concrete_output_dims(model, output_shapes, job.dynamic_batch)

        onnx.helper.set_model_props(model, {**job.metadata, "onnx_exporter": exporter,
                                            "precision": job.options["precision"]})
        shutil.rmtree(workdir / "raw", ignore_errors=True)
        if job.options["precision"] == "fp32":
            return self._finish(model, workdir, job, exporter, warn)
        _save(model, workdir, "auto", REFERENCE_FILE)  # what the quantizer, reduce() and a diagnosis start from
        return self._finish(_reduced(model, workdir, job, (), progress), workdir, job, exporter, warn)

    def reduce(self, job: ExportJob, workdir: Path, keep_float: tuple[str, ...], weight_free: bool = False
               ) -> ExportArtifact:
        """The reduced-precision file again, from the float graph ``export`` kept, with the nodes
        ``keep_float`` left in float (accuracy=auto's next round; ``weight_free`` rounds list every
        weight-free node in ``keep_float`` already: ONNX names each node it converts)."""
        import onnx

        model = onnx.load(str(workdir / REFERENCE_FILE))
        exporter = next((p.value for p in model.metadata_props if p.key == "onnx_exporter"), "legacy")
        return self._finish(_reduced(model, workdir, job, keep_float, lambda _: None), workdir, job, exporter, [])

    def _finish(self, model: Any, workdir: Path, job: ExportJob, exporter: str, warn: list[str]) -> ExportArtifact:
        files = _save(model, workdir, job.options["external_data"])
        info = describe_model(model, exporter)
        del model  # ONNX Runtime holds its own copy of the weights from here on
        return ExportArtifact(files=files, runner=_checked_runner(files[0], job), info=info, warnings=warn)


def check_accuracy_option(options: dict[str, Any]) -> None:
    """accuracy=auto works on a reduced precision only.

    Raises:
        InvalidOptionError: accuracy=auto at fp32.
    """
    if options.get("accuracy") == "auto" and options.get("precision", "fp32") == "fp32":
        raise InvalidOptionError("accuracy=auto keeps layers of a reduced-precision file in float: use it with "
                                 "precision=fp16 or int8 (ONNX), precision=int8 (OpenVINO).")


def _reduced(model: Any, workdir: Path, job: ExportJob, keep_float: tuple[str, ...], progress: Progress) -> Any:
    """The float graph at the job's precision, ``keep_float`` nodes excepted."""
    if job.options["precision"] == "fp16":
        return _to_fp16(model, keep_float)
    progress("quantize")
    return _quantize(model, workdir, job, keep_float)


def intermediate_onnx(job: ExportJob, workdir: Path, progress: Progress, **options: Any) -> ExportArtifact:
    """The ONNX export another format converts from: ONNX defaults plus ``options``, in ``workdir/onnx``."""
    import dataclasses

    onnx_dir = workdir / "onnx"
    onnx_dir.mkdir()
    onnx_options = {**{s.name: s.default for s in OnnxFormat.format_options}, **options}
    return OnnxFormat().export(dataclasses.replace(job, options={**job.options, **onnx_options}), onnx_dir, progress)


def exporter_order(choice: str, opset: int) -> list[str]:
    """Which exporters to try, in order, for ``choice`` at ``opset``.

    Raises:
        InvalidOptionError: no exporter can write that opset.
    """
    fits = {"legacy": LEGACY_OPSETS[0] <= opset <= LEGACY_OPSETS[1],
            "dynamo": DYNAMO_OPSETS[0] <= opset <= DYNAMO_OPSETS[1]}
    order = ["legacy", "dynamo"] if choice == "auto" else [choice]
    usable = [name for name in order if fits[name]]
    if not usable:
        ranges = f"legacy {LEGACY_OPSETS[0]}–{LEGACY_OPSETS[1]}, dynamo {DYNAMO_OPSETS[0]}–{DYNAMO_OPSETS[1]}"
        raise InvalidOptionError(f"Opset {opset} cannot be produced by exporter={choice} ({ranges}).")
    return usable


def _torch_export(exporter: str, job: ExportJob, raw_dir: Path) -> tuple[Path, list[tuple[int, ...]], list[str]]:
    """The exported file, the output shapes PyTorch produced on the example, and the exact rewrites made
    for the exporter (``exporter.exportability``)."""
    import torch

    from exporter.exportability import exact_rewrites

    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / MODEL_FILE
    n, c, h, w = job.input_shape
    # Dynamo bakes a batch-1 example into reshapes (docs/findings.md): give it batch 2.
    batch = max(n, 2) if exporter == "dynamo" and job.dynamic_batch else n
    example = torch.rand(batch, c, h, w)
    axes = None
    if job.dynamic_batch:
        axes = {name: {0: "batch"} for name in (*job.input_names, *job.output_names)}
    kwargs: dict[str, Any] = {"dynamo": exporter == "dynamo", "opset_version": job.options["opset_version"],
                              "input_names": list(job.input_names),
                              "output_names": list(job.output_names), "dynamic_axes": axes}
    if exporter == "dynamo":
        kwargs.update(report=False, verbose=False)
    try:
        with (warnings.catch_warnings(), torch.no_grad(), _mha_fastpath_off(),
              exact_rewrites(job.module, example, functional=exporter == "legacy") as rewrites):
            warnings.simplefilter("ignore")
            torch.onnx.export(job.module, (example,), str(path), **kwargs)
            return path, [tuple(t.shape) for t in job.module(example)], rewrites
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one readable line
        from exporter.exportability import exporter_reason

        text = f"{type(exc).__name__}: {exporter_reason(exc)}" if exporter == "legacy" else one_line(exc)
        raise resource_error(exc, "export") or ExporterError(text, stage="export") from None


def _explained(job: ExportJob) -> str:
    """Where the legacy exporter fails and what to do (``exporter.exportability.locate_failure``), as the
    head of the failure message; empty when the search itself breaks."""
    import torch

    from exporter.exportability import exact_rewrites, explain, locate_failure

    example = torch.rand(*job.input_shape)
    try:
        with _mha_fastpath_off(), exact_rewrites(job.module, example):
            return explain(locate_failure(job.module, example, job.options["opset_version"]), example,
                           job.options["opset_version"]) + ". Exporters tried: "
    except Exception:  # noqa: BLE001 - the exporters' own messages still follow
        return ""


def _concrete_output_dims(model: Any, shapes: list[tuple[int, ...]], dynamic_batch: bool) -> None:
    """Declare the output sizes PyTorch produced where the exporter left a symbolic name.

    Padded detection outputs and masks have fixed sizes except the batch, but the tracer names
    them ``Reshapemasks_dim_1``; consumers (Triton configs, TensorRT profiles) want numbers.
    """
    for output, shape in zip(model.graph.output, shapes, strict=False):
        dims = output.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if dim.dim_param and not (axis == 0 and dynamic_batch):
                dim.dim_value = size


@contextlib.contextmanager
def _mha_fastpath_off():
    """Eval-mode attention takes a fused fast path that ONNX cannot express; trace the plain ops."""
    import torch

    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _check_opset(model: Any, opset: int, exporter: str) -> None:
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExporterError(f"asked for opset {opset} but the {exporter} exporter wrote {written}",
                            stage="export")


def simplify_file(path: Path, warn: list[str]) -> Any:
    """onnxsim on the file (given a path it holds ~2× the model at its peak; given a loaded
    ModelProto, ~5×), or the file as exported when simplification fails."""
    import onnx

    try:
        import onnxsim

        with _quiet_native_stderr():  # its constant folder prints a WARNING line per skipped node
            simplified, ok = onnxsim.simplify(str(path))
    except Exception as exc:  # noqa: BLE001 - never fail an export for simplification
        warn.append(f"onnxsim failed, kept the unsimplified graph: {one_line(exc, 200)}")
        return onnx.load(str(path))
    if not ok:
        warn.append("onnxsim could not verify the simplified graph; kept the unsimplified one")
        return onnx.load(str(path))
    # onnxsim adds ~20 bookkeeping props; keep the file's metadata ours.
    del simplified.metadata_props[:]
    return simplified


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence C++ code writing straight to file descriptor 2 (Python's sys.stderr is untouched)."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _to_fp16(model: Any, keep_float: tuple[str, ...] = ()) -> Any:
    """FP16 with float32 inputs/outputs. Detectors keep their selection sub-graph in float: every node from
    the first TopK / NonMaxSuppression on (proposal scores that tie in fp16 pick other boxes; the demo
    detector then validated with 3 unmatched detections, and with none this way, at 26.4 MB of 49.1) —
    unless a Loop reads it (Mask R-CNN's mask paste: the converter retypes the loop body wrongly), then
    only the converter's default block list (NMS, TopK, RoiAlign, Range, CumSum, Resize) stays in float.
    Kept in float too: every Cast (the converter would retype a ``Cast(to=float)`` feeding a kept-float op
    to float16 and the file would not load: the fault that made FP16 refuse detection tasks) and every node
    that reads a graph output (the converter casts the output back to float32 but not that node's input: the
    autoencoder's score) — each tried without the other when the converter gets that one wrong (PaDiM)."""
    outputs = {o.name for o in model.graph.output}
    nodes = _all_nodes(model.graph)
    casts = [node.name for node in nodes if node.op_type == "Cast"]
    readers = [node.name for node in nodes if outputs.intersection(node.input)]
    selection = downstream(model.graph, SELECTION_OPS)
    attempts = [[*casts, *readers, *selection], [*casts, *readers], [*casts, *selection], casts]
    failure = ""
    for block in dict.fromkeys(tuple(a) for a in attempts):  # the first one the converter gets right
        converted, failure = _fp16_attempt(model, [*block, *keep_float])
        if converted is not None:
            return converted
    raise ExporterError(f"fp16 conversion failed: {failure}", stage="export")


def _fp16_attempt(model: Any, block: list[str]) -> tuple[Any, str]:
    """The converted graph when ONNX Runtime can load it, else ``(None, why)``."""
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument; the float graph stays the reference
    del copy.graph.value_info[:]  # stale float32 types it leaves alone would contradict the new ones
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one line per weight below fp16's smallest normal
            converted = float16.convert_float_to_float16(copy, keep_io_types=True, disable_shape_infer=False,
                                                         node_block_list=block)
        _sort_nodes(converted.graph)
        if converted.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return None, one_line(exc)
    return converted, ""


def downstream(graph: Any, op_types: set[str]) -> list[str]:
    """Names of the nodes of ``op_types`` and of every node that reads (directly or not) one of their outputs,
    but for nodes whose outputs a Loop/If body reads (the converter renames them without telling the body)."""
    body_reads = {name for node in graph.node if node.op_type in ("Loop", "If") for name in _reads(node)}
    tainted, names = set(), []
    for node in graph.node:
        if node.op_type in op_types or tainted.intersection(node.input):
            tainted.update(node.output)
            if not body_reads.intersection(node.output):
                names.append(node.name)
    return names


def _all_nodes(graph: Any) -> list[Any]:
    """The nodes of ``graph`` and of every Loop/If body inside it."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                nodes.extend(_all_nodes(body))
    return nodes


def _reads(node: Any) -> set[str]:
    """The tensors ``node`` reads: its inputs and the outer tensors its Loop/If bodies use."""
    names = set(node.input)
    for attribute in node.attribute:
        for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            inner = {out for n in body.node for out in n.output} | {i.name for i in body.input}
            names |= {name for n in body.node for name in _reads(n)} - inner
    return names


def _sort_nodes(graph: Any) -> None:
    """Order ``graph``'s nodes topologically, counting the outer tensors a Loop/If body reads (the fp16
    converter appends its Casts at the end, after a Loop that reads them)."""
    produced = {name for node in graph.node for name in node.output}
    nodes = list(graph.node)
    needs = [_reads(node) & produced for node in nodes]
    pending, ready, ordered = list(range(len(nodes))), set(), []
    while pending:
        progressed = [i for i in pending if needs[i] <= ready]
        if not progressed:  # a cycle: leave the order as it is, the checker will say what is wrong
            return
        for i in progressed:
            ordered.append(nodes[i])
            ready.update(nodes[i].output)
        pending = [i for i in pending if i not in set(progressed)]
    copied = [type(node)() for node in ordered]
    for target, node in zip(copied, ordered, strict=True):
        target.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copied)


class _Calibration:
    """Feeds calibration images one at a time to onnxruntime's static quantizer."""

    def __init__(self, input_name: str, images: np.ndarray, count: int) -> None:
        self.batches = iter([{input_name: images[i:i + 1]} for i in range(min(count, len(images)))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _quantize(model: Any, workdir: Path, job: ExportJob, keep_float: tuple[str, ...] = ()) -> Any:
    """INT8 with onnxruntime: dynamic (weights only) or static QDQ calibrated on real inputs.

    Unsigned 8-bit activations with signed weights (U8S8) is ONNX Runtime's fast x86 path
    (VNNI): resnet50 static 6.4 ms vs 15.9 ms for S8S8 and 18.5 ms FP32; dynamic with unsigned
    weights 19.7 ms vs 99 ms signed (ConvInteger). On AVX2 CPUs without VNNI, U8S8 products can
    saturate; validation on the target's own inputs is what tells."""
    import onnx
    from onnxruntime import quantization as q

    source, target = workdir / REFERENCE_FILE, workdir / "int8.onnx"  # export() saved the float graph there
    try:
        if job.options["quantization"] == "static":
            reader = _Calibration(job.input_names[0], job.calibration.astype(np.float32),
                                  job.options["calibration_samples"])
            q.quantize_static(str(source), str(target), reader, quant_format=q.QuantFormat.QDQ,
                              per_channel=True, activation_type=q.QuantType.QUInt8,
                              weight_type=q.QuantType.QInt8, nodes_to_exclude=list(keep_float))
        else:
            q.quantize_dynamic(str(source), str(target), weight_type=q.QuantType.QUInt8, per_channel=True,
                               nodes_to_exclude=list(keep_float))
        quantized = onnx.load(str(target))
    except Exception as exc:  # noqa: BLE001
        raise ExporterError(f"int8 quantization failed: {one_line(exc)}", stage="export") from None
    finally:
        target.unlink(missing_ok=True)
    # quantize_* drops metadata_props; the file must still describe itself.
    onnx.helper.set_model_props(quantized, {p.key: p.value for p in model.metadata_props})
    return quantized


def _save(model: Any, workdir: Path, external_data: str, name: str = MODEL_FILE) -> list[Path]:
    import onnx

    path = workdir / name
    size = model.ByteSize() if external_data == "auto" else 0
    external = external_data == "always" or (external_data == "auto" and size > EXTERNAL_DATA_THRESHOLD)
    if external and external_data != "never":
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{name}.data", size_threshold=1024)
        return [path, workdir / f"{name}.data"]
    onnx.save_model(model, str(path))
    return [path]


def _checked_runner(path: Path, job: ExportJob) -> OrtRunner:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
        runner = OrtRunner(path)
        if job.dynamic_batch:  # a declared dynamic batch proves nothing until it runs
            n, c, h, w = job.input_shape
            runner.run({job.input_names[0]: np.random.rand(2, c, h, w).astype(np.float32)})
    except Exception as exc:  # noqa: BLE001
        raise ExporterError(f"the written file does not run: {one_line(exc)}", stage="export") from None
    return runner


def describe_model(model: Any, exporter: str) -> dict[str, Any]:
    """Inputs, outputs, opset, IR version, node count and op-type counts of a ModelProto."""
    import onnx

    def tensor_info(value: Any) -> dict[str, Any]:
        ttype = value.type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in ttype.shape.dim]
        return {"name": value.name, "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name}

    ops = collections.Counter(node.op_type for node in model.graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"inputs": [tensor_info(v) for v in model.graph.input],
            "outputs": [tensor_info(v) for v in model.graph.output],
            "opset": opset, "ir_version": model.ir_version, "node_count": len(model.graph.node),
            "op_types": dict(ops.most_common()), "exporter": exporter}


def _clear(workdir: Path) -> None:
    for child in workdir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
