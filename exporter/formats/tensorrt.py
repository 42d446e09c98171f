"""TensorRT engines (``model.engine`` + ``model.engine.json``): available only with the
``tensorrt`` package **and** a CUDA GPU.

The engine is built from our own validated-path ONNX export (FP16 from the FP16 ONNX, as
TensorRT 11 has no precision flags: the network is strongly typed where the API offers it,
and TF32 is off so an FP32 engine computes in FP32). It stays a plain serialized engine that
``trtexec`` and Triton load; what it was built for (TensorRT, CUDA, GPU, shapes) goes in the
JSON beside it, because an engine runs only with the TensorRT version and GPU model it was
built on. Validation runs the engine on the GPU against PyTorch at batch 1 and 2.

Not verified on a GPU yet: no machine of this workplace has TensorRT (docs/formats/index.md). The
availability logic, the option checks and the refusals are tested without one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import ExporterError, InvalidOptionError, one_line, resource_error
from exporter.formats.onnx import describe_model, intermediate_onnx
from exporter.formats.registry import (
    FP16_TOLERANCE,
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    register_format,
)
from exporter.options import OptionSpec

ENGINE_FILE, META_FILE = "model.engine", "model.engine.json"
WORKSPACE_BYTES = 4 << 30


def cuda_gpu() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable here, with the reason when it is not."""
    try:
        import torch
    except ImportError:
        return False, "needs torch with CUDA"
    if not torch.cuda.is_available():
        return False, "needs an NVIDIA GPU with CUDA; none was found"
    return True, torch.cuda.get_device_name(0)


def profile_shapes(input_shape: tuple[int, ...], dynamic_batch: bool, max_batch: int) -> dict[str, list[int]]:
    """The optimisation profile: batch 1..max_batch (optimised for the export's batch), or fixed."""
    n, *rest = input_shape
    if not dynamic_batch:
        return {"min": [n, *rest], "opt": [n, *rest], "max": [n, *rest]}
    return {"min": [1, *rest], "opt": [min(max(n, 1), max_batch), *rest], "max": [max_batch, *rest]}


def _trt():
    import tensorrt

    return tensorrt


class TrtRunner:
    """A deserialized engine run on the GPU through torch's CUDA tensors (no pycuda needed)."""

    def __init__(self, path: Path, output_order: list[str] | None = None) -> None:
        trt = _trt()
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ExporterError("TensorRT could not load the engine: it runs only with the TensorRT version and "
                                "GPU model it was built for (see model.engine.json).", stage="validate")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.engine.get_tensor_mode
        self.inputs = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]
        if output_order and sorted(output_order) == sorted(self.outputs):  # validation pairs outputs by position
            self.outputs = list(output_order)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        trt = _trt()
        held = []
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            held.append(tensor)
        outputs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} has a data-dependent shape {shape}; not supported yet")
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outputs.append(torch.empty(shape, dtype=dtype, device="cuda"))
            self.context.set_tensor_address(name, outputs[-1].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT could not execute the engine")
        stream.synchronize()
        return [t.cpu().numpy() for t in outputs]

    def close(self) -> None:
        self.context = self.engine = None


@register_format("tensorrt", display_name="TensorRT", suffix=".engine")
class TensorRtFormat(ExportFormat):
    """ONNX (as for the ONNX format, FP16 ONNX for fp16) → TensorRT builder → serialized engine."""

    note = "An engine runs only with the TensorRT version and GPU model it was built on."
    stages = ("export", "simplify", "engine")
    runtime_modules = ("torch", "tensorrt")
    tolerance = 1e-3  # GPU kernels sum in other orders than the CPU
    needs_gpu = True
    triton, triton_file = ("platform", "tensorrt_plan"), "model.plan"
    not_diagnosable = "TensorRT fuses layers into kernels; diagnose the ONNX export it is built from"
    reduced_precision = {("precision", "fp16"): FP16_TOLERANCE}
    variants = (("fp32", {}), ("fp16", {"precision": "fp16"}))
    format_options = (
        OptionSpec("precision", "choice", "fp32", "fp16 is built from an FP16 ONNX (TensorRT 11 has no precision "
                   "flags).", choices=("fp32", "fp16"), label="Precision"),
        OptionSpec("max_batch", "int", 8, "Largest batch the engine's optimisation profile accepts.",
                   minimum=1, maximum=64, label="Largest batch size", advanced=True),
    )

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "install the tensorrt package (requirements-gpu.txt) on a machine with an NVIDIA GPU"
        gpu, name_or_reason = cuda_gpu()
        return (True, "") if gpu else (False, name_or_reason)

    def check_options(self, options: dict[str, Any]) -> None:
        if options["dynamic_batch"] and options["max_batch"] < 2:
            raise InvalidOptionError("max_batch must be at least 2 with a dynamic batch (validation runs batch 2); "
                                     "or turn dynamic_batch off.")

    def load(self, path: Path, model: dict[str, Any]) -> TrtRunner:
        meta = path.with_name(META_FILE)
        return TrtRunner(path, json.loads(meta.read_text()).get("outputs") if meta.is_file() else None)

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """The engine on the GPU; timings include the host↔device copies a caller with numpy pays."""
        import torch

        return Deployed(self.load(path, model), {
            "runtime": f"tensorrt {_trt().__version__}", "device": "cuda", "gpu": torch.cuda.get_device_name(0),
            "precision": options["precision"], "copies": "host→device input, device→host outputs"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        outputs = [o["name"] for o in model.get("outputs") or []]
        return Usage(
            imports=("import tensorrt as trt", "import torch  # CUDA buffers"),
            load=("with open(" + repr(file) + ', "rb") as f:',
                  "    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(f.read())",
                  "context = engine.create_execution_context()"),
            run=("name = engine.get_tensor_name(0)  # the input",
                 "image = torch.from_numpy(x).cuda()",
                 "context.set_input_shape(name, tuple(image.shape))",
                 "context.set_tensor_address(name, image.data_ptr())",
                 "buffers = []",
                 f"for out in {outputs!r}:",
                 "    dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(out)))).dtype",
                 "    buffers.append(torch.empty(tuple(context.get_tensor_shape(out)), dtype=dtype, device='cuda'))",
                 "    context.set_tensor_address(out, buffers[-1].data_ptr())",
                 "context.execute_async_v3(torch.cuda.current_stream().cuda_stream)",
                 "torch.cuda.synchronize()",
                 "outputs = [b.cpu().numpy() for b in buffers]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        onnx_artifact = intermediate_onnx(job, workdir, progress, precision=job.options["precision"])
        onnx_artifact.runner.close()
        import onnx

        info = describe_model(onnx.load(str(onnx_artifact.files[0]), load_external_data=False), "tensorrt")
        progress("engine")
        shapes = profile_shapes(job.input_shape, job.dynamic_batch, job.options["max_batch"])
        engine = workdir / ENGINE_FILE
        try:
            engine.write_bytes(_build_engine(onnx_artifact.files[0], job.input_names[0], shapes))
        except ExporterError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"TensorRT could not build the engine: {one_line(exc)}", stage="export") from None
        built_for = built_for_here()
        (workdir / META_FILE).write_text(json.dumps({**job.metadata, **built_for, "profile": shapes,
                                                     "inputs": list(job.input_names),
                                                     "outputs": list(job.output_names)}, indent=2))
        shutil.rmtree(workdir / "onnx", ignore_errors=True)
        note = (f"The engine runs only with TensorRT {built_for['tensorrt_version']} on a {built_for['gpu']} "
                f"(compute capability {built_for['compute_capability']}); rebuild it for another GPU or version.")
        return ExportArtifact(files=[engine, workdir / META_FILE], runner=TrtRunner(engine, list(job.output_names)),
                              info={**info, **built_for}, warnings=[*onnx_artifact.warnings, note])


def built_for_here() -> dict[str, str]:
    """TensorRT, CUDA and GPU this process builds for (engines do not move between them)."""
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {"tensorrt_version": _trt().__version__, "cuda_version": str(torch.version.cuda),
            "gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def _build_engine(onnx_path: Path, input_name: str, shapes: dict[str, list[int]]) -> bytes:
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExporterError(f"TensorRT's ONNX parser refused the graph: {errors[:600]}", stage="export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExporterError("TensorRT could not build the engine (its log above says why).", stage="export")
    return bytes(serialized)
