"""Where does an export diverge? Every intermediate tensor of the file against a reference, in graph order.

Three comparisons, chosen by what the file is:

- a reduced-precision ONNX file (fp16, int8) against the fp32 ONNX graph of the same checkpoint,
  tensor by tensor (the quantizers keep the float graph's tensor names; what a conversion removed,
  e.g. a Relu folded into its Conv's quantization, is simply not compared);
- an OpenVINO IR against the fp32 ONNX graph it was converted from, the same way (every op's output
  made an output of the model; the converter keeps the ONNX tensor names);
- an fp32 ONNX file against PyTorch, module by module: forward hooks on the leaf modules, matched to
  the nodes through the scope names the exporter writes (``/model/layer1/layer1.0/conv1/Conv`` ↔
  ``model.layer1.0.conv1``; ``relu_1`` is the second call of ``relu``; a BatchNorm folded into the
  Conv before it is compared at its own output).

Error of one tensor: ``‖file − reference‖₂ / ‖reference‖₂`` (scale-free, so layers of any magnitude
line up; 1e-2 is an SQNR of 40 dB). The error a layer *adds* is its error minus the largest error
among its inputs; the layers adding the most are where to look, and what accuracy-aware reduced
precision keeps in float. ONNX Runtime's ``qdq_loss_debug`` does the first comparison for QDQ files
only; this does it for any pair of ONNX graphs and for PyTorch.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

TOP_LAYERS = 10
CONCENTRATION = 0.8  # the reading says how many layers add this share of the error
MAX_LAYERS_STORED = 3000
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
MAX_SEGMENT = 12  # nodes a layer's segment reaches back over (uncompared ones feeding it)
_EPS = 1e-12
DEQUANTIZED = "_DequantizeLinear_Output"  # onnxruntime.quantization's name for a tensor after its QDQ pair
_CALL = re.compile(r"^(.*)_(\d+)$")


@dataclass(frozen=True)
class Layer:
    """One compared tensor: the node that makes it, where it sits, its error and the error it adds."""

    index: int  # position of the node in the graph (topological order)
    node: str
    op_type: str
    module: str | None
    error: float
    added: float
    nodes: tuple[str, ...] = ()  # the node and the uncompared ones since the compared tensors before it


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """``‖candidate − reference‖₂ / ‖reference‖₂`` (float64; a zero reference counts its size)."""
    ref = np.asarray(reference, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(candidate, dtype=np.float64) - ref)
    return float(diff / max(np.linalg.norm(ref), 1e-6 * np.sqrt(max(ref.size, 1)), _EPS))


def module_path(node_name: str, modules: set[str] | None = None) -> tuple[str, int] | None:
    """``(module path, call index)`` from an exporter node name, or None when it has no scope.

    ``/model/layer1/layer1.0/conv1/Conv`` → ``("model.layer1.0.conv1", 0)``; the tracer writes a
    child of a container as ``layer1.0`` and a module's second call as ``relu_1``.
    """
    parts = node_name.split("/")
    if len(parts) < 3 or parts[0]:
        return None
    attrs, previous = [], ""
    for segment in parts[1:-1]:
        attrs.append(segment[len(previous) + 1:] if previous and segment.startswith(previous + ".") else segment)
        previous = segment
    path, call = ".".join(attrs), 0
    if modules is not None and path not in modules and (match := _CALL.match(path)) and match[1] in modules:
        path, call = match[1], int(match[2])
    return path, call


def with_all_outputs(model: Any) -> tuple[Any, list[Any]]:
    """A copy of ``model`` whose every node output is also a graph output, and the nodes in order."""
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in existing:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                existing.add(name)
    return exposed, list(model.graph.node)


def run_all(model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float tensor ``model`` computes on ``inputs`` (ONNX Runtime, CPU), by name."""
    import onnx
    import onnxruntime as ort

    exposed, _ = with_all_outputs(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="aistudio-diagnose-") as tmp:  # past 2 GB only a file works
        path = Path(tmp) / "exposed.onnx"
        onnx.save_model(exposed, str(path), save_as_external_data=exposed.ByteSize() > 1_500_000_000)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, inputs)
    return {n: v for n, v in zip(names, values, strict=True)
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)}


def layer_errors(nodes: list[Any], measured: dict[int, float], graph_inputs: set[str],
                 modules: dict[int, str | None]) -> list[Layer]:
    """Layers in graph order from the error measured at some nodes' first output (``measured``: node
    index → error). Errors flow through unmeasured nodes (their output carries their inputs' worst)."""
    error_of: dict[str, float] = dict.fromkeys(graph_inputs, 0.0)
    segment_of: dict[str, tuple[str, ...]] = {}  # tensor → uncompared nodes that made it since a compared one
    producer_of: dict[str, str] = {}
    layers = []
    for index, node in enumerate(nodes):
        if node.op_type == "Constant":
            continue
        upstream = max((error_of.get(name, 0.0) for name in node.input if name), default=0.0)
        error = measured.get(index, upstream)
        name = node.name or node.output[0]
        # A node's inputs carry their producers' rounding (a QDQ pair sits on a quantized op's output), so
        # the producers of its inputs belong to what keeping it in float must cover.
        feeders = (producer_of[i] for i in node.input if i in producer_of)
        segment = (*dict.fromkeys([*(n for i in node.input for n in segment_of.get(i, ())), *feeders, name]),)
        segment = segment[-MAX_SEGMENT:]
        for output in node.output:
            error_of[output] = error
            producer_of[output] = name
            segment_of[output] = () if index in measured else segment
        if index in measured:
            layers.append(Layer(index, name, node.op_type, modules.get(index), error,
                                max(0.0, error - upstream), segment))
    return layers


def compare_onnx(reference: Any, candidate: Any, inputs: dict[str, np.ndarray]) -> list[Layer]:
    """The candidate graph's tensors against the reference graph's of the same name, reference order."""
    return compare_values(reference, run_all(reference, inputs), run_all(candidate, inputs))


def openvino_values(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every named float tensor an OpenVINO IR computes on ``inputs`` (CPU, f32 inference), by tensor name:
    each op's outputs are added to the model's outputs (the names are the ONNX graph's it was converted from)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    extra = [out for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Constant", "Result")
             for out in op.outputs() if out.get_names()]
    model.add_outputs(extra)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(inputs)
    values = {}
    for port in compiled.outputs:
        value = np.asarray(result[port])
        if np.issubdtype(value.dtype, np.floating):
            values.update(dict.fromkeys(port.get_names(), value))
    return values


def compare_values(reference: Any, ref_values: dict[str, np.ndarray],
                   cand_values: dict[str, np.ndarray]) -> list[Layer]:
    """Tensors of a candidate against the reference graph's of the same name, in the reference's node order."""
    nodes = list(reference.graph.node)
    measured = {}
    for index, node in enumerate(nodes):
        name = node.output[0] if node.output else ""
        # QDQ: what the next layer sees is the tensor after its quantize-dequantize pair (a Relu before
        # it may even be gone, its clamp done by the quantization), as qdq_loss_debug compares it too.
        ref, cand = ref_values.get(name), cand_values.get(f"{name}{DEQUANTIZED}", cand_values.get(name))
        if ref is not None and cand is not None and ref.shape == cand.shape:
            measured[index] = relative_error(cand, ref)
    modules = {i: _scope(n.name) for i, n in enumerate(nodes)}
    return layer_errors(nodes, measured, {i.name for i in reference.graph.input}, modules)


def torch_calls(module: nn.Module, x: Any) -> dict[tuple[str, int], Any]:
    """``(leaf module path, call index) → output`` of one forward pass (clones: later in-place ops such as
    ``relu(inplace=True)`` or ``out += identity`` would overwrite them). A BatchNorm applied straight to
    a module's output stands in for that output, since the exporter folds it into the op before it."""
    import torch

    calls: dict[tuple[str, int], Any] = {}
    produced: dict[int, tuple[str, int]] = {}  # id(output) → the call that made it
    alive: list[Any] = []  # keeps outputs alive so their ids stay unique during the pass
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str, leaf: nn.Module):
        def record(_: nn.Module, args: tuple, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            call = (name, counts.get(name, 0))
            counts[name] = call[1] + 1
            value = output.detach().clone()
            calls[call] = value
            source = produced.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
            if source is not None and isinstance(leaf, torch.nn.modules.batchnorm._BatchNorm):
                calls[source] = value
            produced[id(output)] = call
            alive.append(output)
        return record

    for name, leaf in module.named_modules():
        if name and not any(True for _ in leaf.children()):
            hooks.append(leaf.register_forward_hook(hook(name, leaf)))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in hooks:
            handle.remove()
    return calls


def compare_pytorch(model: Any, module: nn.Module, inputs: dict[str, np.ndarray]) -> tuple[list[Layer], dict]:
    """The ONNX graph's node outputs against the PyTorch leaf modules they were exported from.

    Returns the layers and the mapping counts: ``nodes``, ``mapped`` (compared with a module),
    ``conv`` / ``conv_mapped``.
    """
    import torch

    values = run_all(model, inputs)
    calls = torch_calls(module, torch.from_numpy(next(iter(inputs.values()))))
    names = {name for name, _ in module.named_modules()}
    nodes = list(model.graph.node)
    last_node_of: dict[tuple[str, int], int] = {}  # a module exported as several ops: its last one
    for index, node in enumerate(nodes):
        if (scope := module_path(node.name, names)) and scope in calls:
            last_node_of[scope] = index
    measured, modules = {}, {}
    for (path, call), index in last_node_of.items():
        value = values.get(nodes[index].output[0])
        expected = calls[(path, call)].numpy()
        if value is not None and value.shape == expected.shape:
            measured[index] = relative_error(value, expected)
            modules[index] = path if call == 0 else f"{path} (call {call + 1})"
    for index, node in enumerate(nodes):
        modules.setdefault(index, _scope(node.name))
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    counts = {"nodes": len(nodes), "mapped": len(measured), "conv": len(convs),
              "conv_mapped": sum(1 for i in convs if i in measured)}
    return layer_errors(nodes, measured, {i.name for i in model.graph.input}, modules), counts


def summarize(layers: list[Layer], tolerance: float, *, reference: str, comparison: str,
              duration_s: float, mapping: dict[str, int] | None = None) -> dict[str, Any]:
    """The stored diagnosis: layers in graph order, the first over ``tolerance``, the top adders, a reading."""
    first = next((layer for layer in layers if layer.error > tolerance), None)
    top = sorted(layers, key=lambda layer: layer.added, reverse=True)[:TOP_LAYERS]
    total = sum(layer.added for layer in layers)
    share, count = 0.0, 0
    for layer in sorted(layers, key=lambda layer: layer.added, reverse=True):
        if total <= 0 or share >= CONCENTRATION * total:
            break
        share, count = share + layer.added, count + 1
    final = layers[-1].error if layers else 0.0
    if not layers:
        reading = "no intermediate tensor of the file could be compared with the reference"
    elif first:
        reading = (f"error first exceeds {tolerance:.0e} at `{first.node}`; {CONCENTRATION:.0%} of the error added "
                   f"along the graph comes from {count} layer{'s' if count != 1 else ''}")
    else:
        worst = max(layers, key=lambda layer: layer.error)
        reading = f"no layer exceeds {tolerance:.0e} (largest {worst.error:.1e} at `{worst.node}`)"
    stored = layers if len(layers) <= MAX_LAYERS_STORED else top
    return {"status": "completed", "available": True, "reference": reference, "comparison": comparison,
            "metric": "relative L2 error ‖file − reference‖ / ‖reference‖", "tolerance": tolerance,
            "layers": [asdict(layer) for layer in stored], "compared": len(layers),
            "first_above": asdict(first) if first else None, "top": [asdict(layer) for layer in top],
            "concentration": {"share": CONCENTRATION, "layers": count}, "final_error": final,
            "mapping": mapping, "reading": reading, "duration_s": round(duration_s, 2)}


def unavailable(fmt_display: str, why: str) -> dict[str, Any]:
    """The stored answer for a file whose runtime exposes no intermediate tensors."""
    return {"status": "completed", "available": False,
            "reading": f"not available for {fmt_display}: {why}", "layers": [], "top": []}


def _scope(node_name: str) -> str | None:
    scope = module_path(node_name)
    return scope[0] if scope and scope[0] else None


def diagnose_file(fmt: Any, options: dict[str, Any], path: Path, module: nn.Module, inputs: dict[str, np.ndarray],
                  reference: Path | None) -> dict[str, Any]:
    """The stored diagnosis of an exported file: a reduced-precision ONNX file or an OpenVINO IR against
    ``reference`` (the fp32 ONNX graph it was made from), an fp32 ONNX file against ``module``; other formats
    say why not."""
    import onnx

    from exporter.formats import IR_DIAGNOSIS

    if not fmt.diagnosis:
        return unavailable(fmt.display_name, fmt.not_diagnosable)
    started = time.perf_counter()
    tolerance = fmt.default_tolerance(options)
    if fmt.diagnosis == IR_DIAGNOSIS:
        if reference is None:
            raise ValueError("an OpenVINO IR is diagnosed against the ONNX graph it was converted from")
        graph = onnx.load(str(reference))
        layers = compare_values(graph, run_all(graph, inputs), openvino_values(path, inputs))
        return summarize(layers, tolerance, reference="onnx fp32", duration_s=time.perf_counter() - started,
                         comparison=f"OpenVINO IR ({openvino_variant(options)}) against the fp32 ONNX graph it "
                                    "was converted from, tensor by tensor")
    candidate = onnx.load(str(path))
    if options.get("precision", "fp32") == "fp32":
        layers, counts = compare_pytorch(candidate, module, inputs)
        return summarize(layers, tolerance, reference="pytorch", mapping=counts,
                         comparison="fp32 ONNX against PyTorch, module by module",
                         duration_s=time.perf_counter() - started)
    if reference is None:
        raise ValueError("a reduced-precision file is diagnosed against its fp32 graph")
    layers = compare_onnx(onnx.load(str(reference)), candidate, inputs)
    return summarize(layers, tolerance, reference="onnx fp32",
                     comparison=f"{options['precision']} ONNX against the fp32 ONNX graph, tensor by tensor",
                     duration_s=time.perf_counter() - started)


def openvino_variant(options: dict[str, Any]) -> str:
    if options.get("precision") == "int8":
        return "int8, NNCF"
    return "fp16 weights" if options.get("compress_to_fp16") else "fp32"


def ranking(reference: Path, candidate: Path, inputs: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """Segments of the float graph, the one adding the most error in ``candidate`` (an ONNX file or an OpenVINO
    IR) first: what accuracy=auto keeps in float."""
    import onnx

    graph = onnx.load(str(reference))
    values = openvino_values(candidate, inputs) if candidate.suffix == ".xml" else run_all(onnx.load(str(candidate)),
                                                                                             inputs)
    layers = compare_values(graph, run_all(graph, inputs), values)
    return [layer.nodes for layer in sorted(layers, key=lambda layer: layer.added, reverse=True) if layer.added > 0]


def weight_free_nodes(reference: Path) -> list[str]:
    """The nodes of the float graph that carry no weights (all but Conv, ConvTranspose, Gemm, MatMul)."""
    import onnx

    return [node.name for node in onnx.load(str(reference), load_external_data=False).graph.node
            if node.op_type not in WEIGHTED_OPS and node.op_type != "Constant"]
