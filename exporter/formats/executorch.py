"""ExecuTorch (``.pte``): ``torch.export`` → ``to_edge_transform_and_lower`` with the XNNPACK partitioner →
``to_executorch``; ``quantize=int8`` first runs XNNPACK's PT2E quantizer, calibrated on the job's images.

Validated by ExecuTorch's own runtime (``executorch.runtime``), the C++ runtime phones embed, loading the ``.pte``.
The metadata travels beside it as ``metadata.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from exporter.capabilities import DEFORMABLE_ATTENTION, NMS, NO_TORCHSCRIPT, ROI_ALIGN, TORCHSCRIPT_PROGRAM
from exporter.errors import ExporterError, OutputFileError, one_line, resource_error
from exporter.formats.pt2 import export_program, program_info
from exporter.formats.registry import (
    INT8_TOLERANCE,
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    register_format,
    write_metadata,
)
from exporter.options import OptionSpec

MODEL_FILE = "model.pte"
NO_DETECTION_KERNELS = ("ExecuTorch's kernel library has no torchvision::nms or torchvision::roi_align kernel "
                        "for the in-graph post-processing (and its memory planner cannot size their "
                        "data-dependent outputs)")
STATIC_FEATURE_MAP = ("XNNPACK's delegate plans one of Mask2Former's feature maps (its backbone's stride-4 map) for "
                      "the example's batch only, so the program fails at any other batch (\"Attempted to resize a "
                      "static tensor\")")


class ExecuTorchRunner:
    """A ``.pte`` program's ``forward`` loaded by ExecuTorch's runtime (XNNPACK delegate, CPU)."""

    def __init__(self, path: Path) -> None:
        from executorch.runtime import Runtime

        self.method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        # ExecuTorch reads a tensor's memory as contiguous whatever its strides: images loaded from disk are
        # transposed views, which it read as other pixels (evaluation on data/val caught it).
        batch = np.ascontiguousarray(next(iter(inputs.values())), dtype=np.float32)
        outputs = self.method.execute([torch.from_numpy(batch)])
        return [o.numpy() for o in outputs]

    def close(self) -> None:
        self.method = None


@register_format("executorch", display_name="ExecuTorch", suffix=".pte")
class ExecuTorchFormat(ExportFormat):
    """PyTorch's runtime for phones and microcontrollers: the graph lowered to XNNPACK kernels."""

    stages = ("export", "quantize", "lower")
    runtime_modules = ("executorch.runtime",)
    variants = (("fp32", {}), ("int8", {"quantize": "int8"}))
    packages = ("executorch",)
    reduced_precision = {("quantize", "int8"): INT8_TOLERANCE}
    cannot = {NMS: NO_DETECTION_KERNELS, ROI_ALIGN: NO_DETECTION_KERNELS,
              TORCHSCRIPT_PROGRAM: NO_TORCHSCRIPT}
    cannot_dynamic_batch = {DEFORMABLE_ATTENTION: STATIC_FEATURE_MAP}
    note = "For Android/iOS apps and embedded boards: load the .pte with ExecuTorch's runtime (XNNPACK on CPU)."
    format_options = (
        OptionSpec("quantize", "choice", "none",
                   "int8: XNNPACK's post-training quantizer (int8 weights per channel, int8 activations "
                   "calibrated on the project's samples); about ¼ of the file.", choices=("none", "int8"),
                   label="Quantize"),
        OptionSpec("max_batch", "int", 8, "Largest batch the program accepts (its memory is planned for it).",
                   minimum=2, maximum=64, label="Largest batch", advanced=True,
                   applies_when=(("dynamic_batch", (True,)),)),
        OptionSpec("calibration_samples", "int", 16, "int8: images the quantizer calibrates activations on.",
                   minimum=1, maximum=512, label="Calibration images", applies_when=(("quantize", ("int8",)),)),
    )

    def load(self, path: Path, model: dict[str, Any]) -> ExecuTorchRunner:
        return ExecuTorchRunner(path)

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """As an app loads it: ExecuTorch's runtime with the XNNPACK delegate (its own thread pool)."""
        import executorch

        return Deployed(ExecuTorchRunner(path), {
            "runtime": f"executorch {getattr(executorch, '__version__', '?')} (XNNPACK delegate)",
            "device": "cpu", "threads": "XNNPACK default",
            "precision": "int8" if options["quantize"] == "int8" else "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        return Usage(imports=("import torch", "from executorch.runtime import Runtime"),
                     load=(f'method = Runtime.get().load_program("{file}").load_method("forward")',),
                     run=("outputs = [t.numpy() for t in method.execute([torch.from_numpy(x)])]",))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        progress("export")
        program, outputs = export_program(job, max_batch=job.options["max_batch"])
        info, warn = program_info(job, program, outputs, "torch.export + executorch (XNNPACK)")
        if job.options["quantize"] == "int8":
            progress("quantize")
            program = _quantized(job, program)
        progress("lower")
        path = workdir / MODEL_FILE
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"ExecuTorch lowering failed: {one_line(exc)}", stage="export") from None
        try:
            path.write_bytes(lowered.buffer)
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        info["xnnpack_partitions"] = sum(
            1 for node in lowered.exported_program().graph.nodes if "lowered_module" in str(node.target))
        files = [path, write_metadata(job, workdir)]
        return ExportArtifact(files=files, runner=ExecuTorchRunner(path), info=info, warnings=warn)


def _quantized(job: ExportJob, program: Any) -> Any:
    """``program`` quantized to int8 by XNNPACK's PT2E quantizer (per-channel weights), calibrated on the job's
    images one at a time, then exported again with the same batch axis."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    images = torch.from_numpy(job.calibration.astype(np.float32)[:job.options["calibration_samples"]])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            prepared = prepare_pt2e(program.module(), quantizer)
            for image in images:
                prepared(image[None])
            converted = convert_pt2e(prepared)
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "export") or ExporterError(
            f"ExecuTorch int8 quantization failed: {one_line(exc)}", stage="export") from None
    return export_program(job, job.options["max_batch"], module=converted)[0]
