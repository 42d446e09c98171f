"""TorchScript (``.pt``): ``torch.jit.trace`` by default, ``torch.jit.script`` as an option.

Validation loads the file with ``torch.jit.load`` in a separate ``python -I`` process
(``isolated.IsolatedRunner``), where this project's code is not importable: the file must stand on its own.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError, OutputFileError, one_line, resource_error
from exporter.formats.isolated import TORCHVISION_OPS_WARNING, IsolatedRunner, requires_torchvision
from exporter.formats.registry import (
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    TorchRunner,
    Usage,
    example_input,
    io_info,
    register_format,
)
from exporter.options import OptionSpec

MODEL_FILE = "model.pt"
LOAD = 'module = torch.jit.load(path, map_location="cpu").eval()'


@register_format("torchscript", display_name="TorchScript", suffix=".pt")
class TorchScriptFormat(ExportFormat):
    """TorchScript via torch.jit; metadata in the file's ``extra_files``."""

    runtime_modules = ("torch", "torchvision")
    triton, triton_file, triton_by_position = ("platform", "pytorch_libtorch"), "model.pt", True
    packages = ("torch",)
    not_diagnosable = "TorchScript runs the traced graph as one call and exposes no intermediate tensors"

    format_options = (
        OptionSpec("method", "choice", "trace", "trace (default) or script (keeps data-dependent control flow).",
                   choices=("trace", "script"), label="TorchScript method"),
    )

    def serving_modules(self, model: dict[str, Any]) -> tuple[str, ...]:
        return ("torch", "torchvision") if requires_torchvision(model) else ("torch",)

    def load(self, path: Path, model: dict[str, Any]) -> IsolatedRunner:
        return IsolatedRunner(path, LOAD, "torch.jit.load", needs_torchvision=requires_torchvision(model))

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """``torch.jit.load`` in this process (the benchmark's own child), ``threads`` intra-op threads."""
        import torch

        if requires_torchvision(model):
            import torchvision  # noqa: F401 - registers the operators the graph calls
        torch.set_num_threads(threads)
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return Deployed(TorchRunner(module), {"runtime": f"torch {torch.__version__} (torch.jit.load)",
                                                   "device": "cpu", "mode": "inference_mode",
                                                   "threads": torch.get_num_threads(), "precision": "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        imports = ["import torch"]
        if requires_torchvision(model):
            imports.append("import torchvision  # registers the nms / roi_align operators the graph calls")
        return Usage(imports=tuple(imports),
                     load=(f'module = torch.jit.load("{file}", map_location="cpu").eval()',),
                     run=("with torch.no_grad():",
                          "    result = module(torch.from_numpy(x))",
                          "outputs = [t.numpy() for t in (result if isinstance(result, (tuple, list)) else [result])]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        import torch

        progress("export")
        example = example_input(job)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if job.options["method"] == "script":
                    compiled = torch.jit.script(job.module)
                else:
                    compiled = torch.jit.trace(job.module, example, check_trace=False)
                outputs = compiled(example)
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"torch.jit.{job.options['method']} failed: {one_line(exc)}", stage="export") from None
        path = workdir / MODEL_FILE
        try:
            torch.jit.save(compiled, str(path), _extra_files={"metadata.json": json.dumps(job.metadata)})
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        needs_torchvision = "torchvision::" in str(compiled.inlined_graph)
        warn = [TORCHVISION_OPS_WARNING] if needs_torchvision else []
        info = {**io_info(job, outputs), "exporter": f"torch.jit.{job.options['method']}",
                "requires": ["torchvision"] if needs_torchvision else []}
        return ExportArtifact(files=[path], runner=self.load(path, info), info=info, warnings=warn)
