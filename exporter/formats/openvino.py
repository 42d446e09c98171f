"""OpenVINO IR (``model.xml`` + ``model.bin``), converted from our own validated-path ONNX export."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exporter.capabilities import DATA_DEPENDENT_LOOP
from exporter.errors import ExporterError, InvalidOptionError, one_line, resource_error
from exporter.formats.onnx import (
    ACCURACY_OPTION,
    DEFAULT_OPSET,
    check_accuracy_option,
    describe_model,
    exporter_order,
    intermediate_onnx,
)
from exporter.formats.registry import (
    FP16_TOLERANCE,
    INT8_TOLERANCE,
    IR_DIAGNOSIS,
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

BF16_TOLERANCE = 5e-2  # bf16 keeps 8 mantissa bits, fp16 11


def _openvino():
    # Telemetry is opted out at install time (Makefile: opt_in_out --opt_out), see docs/findings.md.
    import openvino

    return openvino


def _type_name(value: Any) -> str:
    """``f32`` / ``bf16`` / ``f16`` from an OpenVINO element type (or its text)."""
    name = getattr(value, "get_type_name", lambda: str(value))()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


class OpenVinoRunner:
    """A model compiled for the CPU; FP32 inference unless the weights were compressed to FP16
    (then the CPU's default inference precision), or ``config`` says otherwise."""

    def __init__(self, path: Path, fp16: bool = False, config: dict[str, Any] | None = None) -> None:
        ov = _openvino()
        config = config if config is not None else ({} if fp16 else {"INFERENCE_PRECISION_HINT": "f32"})
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    @property
    def precision(self) -> str:
        """What the CPU plugin computes in: f32, bf16 or f16."""
        return _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.compiled(inputs)
        return [np.asarray(results[out]) for out in self.compiled.outputs]

    def close(self) -> None:
        self.compiled = None


@register_format("openvino", display_name="OpenVINO IR", suffix=".xml")
class OpenVinoFormat(ExportFormat):
    """ONNX (legacy/dynamo as for the ONNX format) → ``openvino.convert_model`` → ``save_model``."""

    stages = ("export", "simplify", "convert", "quantize")
    packages = ("openvino",)
    diagnosis = IR_DIAGNOSIS
    cannot = {DATA_DEPENDENT_LOOP: "OpenVINO cannot convert the ONNX Loop that pastes Mask R-CNN masks into the image "
                                   "(Conversion is failed for: Loop)"}
    runtime_modules = ("openvino",)
    triton, triton_file, ovms = ("backend", "openvino"), "model.xml", True
    library_exporters = {"anomalib": "to_openvino"}  # what anomalib's Engine.export(ExportType.OPENVINO) calls
    reduced_precision = {("precision", "int8"): INT8_TOLERANCE, ("compress_to_fp16", True): FP16_TOLERANCE}
    variants = (("fp32", {}), ("fp16 weights", {"compress_to_fp16": True}), ("int8", {"precision": "int8"}))
    format_options = (
        OptionSpec("opset_version", "int", DEFAULT_OPSET, "Opset of the intermediate ONNX graph.",
                   minimum=7, maximum=23, label="Intermediate ONNX opset", advanced=True),
        OptionSpec("precision", "choice", "fp32",
                   "int8: post-training quantization with NNCF (nncf.quantize), calibrated on the project's samples "
                   "plus synthetic images; about ¼ of the .bin.", choices=("fp32", "int8"), label="Precision"),
        OptionSpec("compress_to_fp16", "bool", False,
                   "Store weights as FP16 (half the .bin); inference then runs in reduced precision.",
                   label="Compress weights to FP16", applies_when=(("precision", ("fp32",)),)),
        OptionSpec("calibration_samples", "int", 16, "int8: images NNCF calibrates activations on.",
                   minimum=1, maximum=512, label="Calibration images", applies_when=(("precision", ("int8",)),)),
        ACCURACY_OPTION,
    )

    def check_options(self, options: dict[str, Any]) -> None:
        exporter_order("auto", options["opset_version"])
        if options["precision"] == "int8" and options["compress_to_fp16"]:
            raise InvalidOptionError("precision=int8 stores int8 weights; leave compress_to_fp16 off.")
        check_accuracy_option(options)

    def load(self, path: Path, model: dict[str, Any]) -> OpenVinoRunner:
        return OpenVinoRunner(path)

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """Compiled as ``benchmark_app`` and the usage snippet do: the CPU's default inference precision
        (bf16 on CPUs with AMX / AVX-512 BF16), the LATENCY performance hint, ``threads`` threads."""
        ov = _openvino()
        runner = OpenVinoRunner(path, config={"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
        compiled = runner.compiled
        precision = runner.precision
        validated_at = precision if options["compress_to_fp16"] else "f32"  # OpenVinoRunner's config above
        return Deployed(runner, {
            "runtime": f"openvino {ov.get_version().split('-')[0]}", "device": "CPU",
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")), "precision": precision,
            "validated_at": validated_at},
            differs_from_validation=precision != validated_at,
            tolerance=FP16_TOLERANCE if precision == "f16" else BF16_TOLERANCE)

    def serving_usage(self, file: str, model: dict[str, Any]) -> Usage:
        """In float32, as validated (``load``): the CPU's default would be bf16 on AMX / AVX-512 BF16 CPUs."""
        return Usage(imports=("import openvino as ov",),
                     load=(f'compiled = ov.Core().compile_model("{file}", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})'
                           "  # as validated; drop the hint for the CPU's default precision (bf16 on AMX CPUs)",),
                     run=self.usage(file, model).run)

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        return Usage(imports=("import openvino as ov",),
                     load=(f'compiled = ov.Core().compile_model("{file}", "CPU")  # reads {Path(file).stem}.bin '
                           "beside it",),
                     run=("result = compiled(x)", "outputs = [result[port] for port in compiled.outputs]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        onnx_artifact = intermediate_onnx(job, workdir, progress, opset_version=job.options["opset_version"])
        onnx_artifact.runner.close()
        info = _describe(onnx_artifact.files[0])
        if len(onnx_artifact.files) == 1:  # kept for reduce() and a diagnosis (work folder only)
            os.replace(onnx_artifact.files[0], workdir / REFERENCE_FILE)
            source = workdir / REFERENCE_FILE
        else:  # past 2 GB: no int8 rounds, no diagnosis
            source = onnx_artifact.files[0]
        try:
            artifact = self._convert(job, source, workdir, (), progress)
        finally:
            shutil.rmtree(workdir / "onnx", ignore_errors=True)
        artifact.info, artifact.warnings = info, onnx_artifact.warnings
        return artifact

    def reduce(self, job: ExportJob, workdir: Path, keep_float: tuple[str, ...], weight_free: bool = False
               ) -> ExportArtifact:
        """The INT8 IR again from the float graph ``export`` kept, NNCF leaving the ``keep_float`` nodes (ONNX node
        names; their OpenVINO ops keep them as prefixes) in float (accuracy=auto's next round). ``weight_free``
        also leaves every op type but the weighted ones in float: the converter makes ops of its own (a Div
        becomes a Multiply by a constant, unnamed) that NNCF would quantize as weighted — on the demo oriented
        detector that alone put the boxes 82 px off."""
        artifact = self._convert(job, workdir / REFERENCE_FILE, workdir, keep_float, lambda _: None, weight_free)
        artifact.info = _describe(workdir / REFERENCE_FILE)  # the record's inputs and outputs, as export's
        return artifact

    def _convert(self, job: ExportJob, source: Path, workdir: Path, keep_float: tuple[str, ...],
                 progress: Progress, weight_free: bool = False) -> ExportArtifact:
        progress("convert")
        ov = _openvino()
        xml = workdir / "model.xml"
        try:
            model = ov.convert_model(str(source))
            if job.options["precision"] == "int8":
                progress("quantize")
                model = _quantize(model, job, keep_float, weight_free)
            for key, value in job.metadata.items():
                model.set_rt_info(value, ["aistudio", key])
            ov.save_model(model, str(xml), compress_to_fp16=job.options["compress_to_fp16"])
        except ExporterError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"OpenVINO conversion failed: {one_line(exc)}", stage="export") from None
        runner = OpenVinoRunner(xml, fp16=job.options["compress_to_fp16"])
        return ExportArtifact(files=[xml, workdir / "model.bin"], runner=runner)


def _describe(source: Path) -> dict[str, Any]:
    """What the record says of the model (inputs, outputs, operators), from the ONNX graph OpenVINO converts."""
    import onnx

    info = describe_model(onnx.load(str(source), load_external_data=False), "openvino.convert_model")
    info["openvino_version"] = _openvino().get_version()
    return info


WEIGHTED_TYPES = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul", "Parameter", "Result",
                  "Constant"}


def _quantize(model: Any, job: ExportJob, keep_float: tuple[str, ...] = (), weight_free: bool = False) -> Any:
    """INT8 with NNCF's post-training quantization (min-max ranges and fast bias correction) on the job's
    calibration images, one image per step as the file takes them; ``keep_float`` ops stay in float."""
    import logging
    import re

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)  # progress bars and INFO lines per statistic
    images = job.calibration.astype(np.float32)[:job.options["calibration_samples"]]
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    try:
        types = sorted({op.get_type_name() for op in model.get_ordered_ops()} - WEIGHTED_TYPES) if weight_free else []
        ignored = nncf.IgnoredScope(patterns=[re.escape(name) + r"(/.*)?$" for name in keep_float], types=types,
                                    validate=False)
        return nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED,
                             ignored_scope=ignored)
    except Exception as exc:  # noqa: BLE001
        raise ExporterError(f"NNCF int8 quantization failed: {one_line(exc)}", stage="export") from None
