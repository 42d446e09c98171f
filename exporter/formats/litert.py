"""LiteRT (``.tflite``, formerly TensorFlow Lite): ``litert-torch`` (the renamed ai-edge-torch) converts the module
through ``torch.export``; ``precision=int8`` then quantizes weights to int8 (dynamic range) with
``ai-edge-quantizer``.

Validated by the LiteRT ``Interpreter`` (``ai-edge-litert``), the runtime Android and edge TPUs use. The batch is
fixed (see ``FIXED_BATCH``); the metadata travels beside the file as ``metadata.json``.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from exporter.capabilities import NMS, NO_TORCHSCRIPT, TORCHSCRIPT_PROGRAM
from exporter.errors import ExporterError, OutputFileError, one_line, resource_error
from exporter.formats.registry import (
    INT8_TOLERANCE,
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    example_input,
    io_info,
    register_format,
    write_metadata,
)
from exporter.options import OptionSpec

MODEL_FILE = "model.tflite"
FIXED_BATCH = ("LiteRT's converter does not lower a dynamic batch through a classifier's flatten or the oriented "
               "detector's reshapes, so the file takes the batch of input_shape")
NO_NMS = ("LiteRT's converter cannot lower torchvision::nms: its data-dependent number of kept boxes (aten::nonzero) "
          "needs a static size")


def _output_order(name: str) -> int:
    """``output_10`` after ``output_9``: the converter numbers outputs in the module's order."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


class LiteRtRunner:
    """A ``.tflite`` file in the LiteRT Interpreter (CPU, XNNPACK delegate by default), through its signature."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.signature = self.interpreter.get_signature_runner()
        details = self.signature.get_input_details()
        self.input_name = next(iter(details))
        self.output_names = sorted(self.signature.get_output_details(), key=_output_order)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.signature(**{self.input_name: next(iter(inputs.values()))})
        return [np.asarray(result[name]) for name in self.output_names]

    def close(self) -> None:
        self.signature = self.interpreter = None


@register_format("litert", display_name="LiteRT (TFLite)", suffix=".tflite")
class LiteRtFormat(ExportFormat):
    """Google's on-device runtime: Android apps, Coral edge TPUs (after the edge TPU compiler), microcontrollers."""

    stages = ("export", "quantize")
    runtime_modules = ("ai_edge_litert",)
    variants = (("fp32", {}), ("int8", {"precision": "int8"}))
    packages = ("litert_torch", "ai_edge_litert")
    reduced_precision = {("precision", "int8"): INT8_TOLERANCE}
    cannot = {NMS: NO_NMS, TORCHSCRIPT_PROGRAM: NO_TORCHSCRIPT}
    fixed_batch = FIXED_BATCH
    note = "For Android and edge TPUs; the file takes one batch size (that of input_shape, 1 by default)."
    format_options = (
        OptionSpec("precision", "choice", "fp32",
                   "int8: weights stored as int8 and dequantized on the fly (dynamic range, ai-edge-quantizer); "
                   "about ¼ of the file, activations stay float.", choices=("fp32", "int8"), label="Precision"),
    )

    def load(self, path: Path, model: dict[str, Any]) -> LiteRtRunner:
        return LiteRtRunner(path)

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        from importlib.metadata import version

        return Deployed(LiteRtRunner(path, threads), {
            "runtime": f"ai-edge-litert {version('ai-edge-litert')} (Interpreter)", "device": "cpu",
            "threads": threads, "precision": "int8 weights" if options["precision"] == "int8" else "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        return Usage(imports=("from ai_edge_litert.interpreter import Interpreter",),
                     load=(f'runner = Interpreter(model_path="{file}").get_signature_runner()',),
                     run=("result = runner(args_0=x)  # x: the file's fixed batch",
                          "outputs = [result[name] for name in sorted(result, key=lambda n: int(n.split('_')[-1]))]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        import torch

        progress("export")
        path = workdir / MODEL_FILE
        example = example_input(job)
        try:
            import litert_torch

            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                outputs = job.module(example)
                litert_torch.convert(job.module, (example,)).export(str(path))
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"litert-torch conversion failed: {one_line(exc)}", stage="export") from None
        if job.options["precision"] == "int8":
            progress("quantize")
            _quantize(path)
        from importlib.metadata import version

        info = {**io_info(job, outputs),
                "exporter": f"litert-torch {version('litert-torch')}"}
        return ExportArtifact(files=[path, write_metadata(job, workdir)], runner=LiteRtRunner(path), info=info,
                              warnings=[f"fixed batch {job.input_shape[0]}: {FIXED_BATCH}"])


def _quantize(path: Path) -> None:
    """Rewrite ``path`` with int8 weights (``dynamic_wi8_afp32``: weights int8, activations float)."""
    from ai_edge_quantizer import quantizer, recipe

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant = quantizer.Quantizer(str(path))
            quant.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            quant.quantize().export_model(str(path), overwrite=True)
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "export") or ExporterError(
            f"ai-edge-quantizer int8 failed: {one_line(exc)}", stage="export") from None
