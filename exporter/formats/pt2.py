"""PyTorch 2 (``.pt2``): ``torch.export`` writes an ``ExportedProgram`` (the replacement for TorchScript), or, with
``package=aoti``, AOTInductor compiles it to a native CPU library packaged in the ``.pt2``.

Validation loads the file in a separate ``python -I`` process (``torch.export.load`` /
``torch._inductor.aoti_load_package``), where this project's code is not importable: the file stands on its own.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from exporter.capabilities import DATA_DEPENDENT_LOOP, NO_TORCHSCRIPT, TORCHSCRIPT_PROGRAM
from exporter.errors import ExporterError, InvalidOptionError, OutputFileError, one_line, resource_error
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
    write_metadata,
)
from exporter.options import OptionSpec

MODEL_FILE = "model.pt2"
MAX_BATCH = 64  # the upper bound torch.export is told for the dynamic batch
LOADERS = {"program": ("torch.export.load", "module = torch.export.load(path).module()"),
           "aoti": ("torch._inductor.aoti_load_package", "module = torch._inductor.aoti_load_package(path)")}
MASK_PASTE = ("torch.export cannot trace Mask R-CNN's mask pasting: torchvision's paste_masks_in_image loops over a "
              "data-dependent number of detections (a guard on the detection count in aten::unbind)")


def compiler() -> str:
    """The C++ compiler AOTInductor would use, or ""."""
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), "")


def export_program(job: ExportJob, max_batch: int = MAX_BATCH, module: Any = None) -> tuple[Any, Any]:
    """``(ExportedProgram, PyTorch's outputs at the example input)`` of ``module`` (the job's): non-strict
    ``torch.export``, the batch axis a ``Dim`` up to ``max_batch`` when it is dynamic.

    The example input has batch 2 when the batch is dynamic: a batch-1 example lets the tracer specialise
    on 1 (FINDINGS: a Reshape baked to batch 1).
    """
    import torch
    from torch.export import Dim

    n = job.input_shape[0]
    example = example_input(job, max(n, 2) if job.dynamic_batch else n)
    dynamic = ({0: Dim("batch", min=1, max=max_batch)},) if job.dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            module = job.module if module is None else module
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=False)
            outputs = module(example[:n])
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "export") or ExporterError(
            f"torch.export failed: {one_line(exc)}", stage="export") from None
    return program, outputs if isinstance(outputs, (tuple, list)) else (outputs,)


def program_info(job: ExportJob, program: Any, outputs: Any, exporter: str) -> tuple[dict[str, Any], list[str]]:
    """The record's model facts for a file made from ``program`` and the warnings its graph calls for."""
    from collections import Counter

    ops = Counter(getattr(getattr(node.target, "_schema", None), "name", str(node.target))
                  for node in program.graph.nodes if node.op == "call_function")
    needs_torchvision = any(op.startswith("torchvision::") for op in ops)
    info = {**io_info(job, outputs), "exporter": exporter, "requires": ["torchvision"] if needs_torchvision else [],
            "node_count": sum(ops.values()), "op_types": dict(sorted(ops.items()))}
    return info, [TORCHVISION_OPS_WARNING] if needs_torchvision else []


@register_format("pt2", display_name="PyTorch 2 (.pt2)", suffix=".pt2")
class Pt2Format(ExportFormat):
    """``torch.export`` → ``torch.export.save`` (metadata inside), or an AOTInductor package (metadata beside)."""

    stages = ("export", "compile")
    runtime_modules = ("torch", "torchvision")
    packages = ("torch",)
    cannot = {DATA_DEPENDENT_LOOP: MASK_PASTE, TORCHSCRIPT_PROGRAM: NO_TORCHSCRIPT}
    note = ("The replacement for TorchScript: an ExportedProgram for this torch version, or (package=aoti) "
            "AOTInductor's native CPU code.")
    format_options = (
        OptionSpec("package", "choice", "program",
                   "program: the ExportedProgram (torch.export.load). aoti: compiled ahead of time by "
                   "AOTInductor into a CPU library inside the .pt2 (torch._inductor.aoti_load_package; needs the "
                   "system C++ compiler, about 25 s for a ResNet-18).", choices=("program", "aoti"),
                   label="Package"),
    )

    def check_options(self, options: dict[str, Any]) -> None:
        super().check_options(options)
        if options["package"] == "aoti" and not compiler():
            raise InvalidOptionError("package=aoti compiles C++ and no C++ compiler is installed here: install one "
                                     "(apt-get install g++) or use package=program.")

    def serving_modules(self, model: dict[str, Any]) -> tuple[str, ...]:
        return ("torch", "torchvision") if requires_torchvision(model) else ("torch",)

    def load(self, path: Path, model: dict[str, Any]) -> IsolatedRunner:
        loader, code = LOADERS[model.get("package", "program")]
        return IsolatedRunner(path, code, loader, needs_torchvision=requires_torchvision(model))

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """The file loaded in this process (the benchmark's own child), ``threads`` intra-op threads."""
        import torch

        if requires_torchvision(model):
            import torchvision  # noqa: F401 - registers the operators the graph calls
        torch.set_num_threads(threads)
        package = model.get("package", "program")
        module = (torch.export.load(str(path)).module() if package == "program"
                  else torch._inductor.aoti_load_package(str(path)))
        return Deployed(TorchRunner(module), {"runtime": f"torch {torch.__version__} ({LOADERS[package][0]})",
                                              "device": "cpu", "threads": torch.get_num_threads(),
                                              "precision": "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        imports = ["import torch"]
        if requires_torchvision(model):
            imports.append("import torchvision  # registers the nms / roi_align operators the graph calls")
        load = (f'module = torch.export.load("{file}").module()' if model.get("package", "program") == "program"
                else f'module = torch._inductor.aoti_load_package("{file}")')
        return Usage(imports=tuple(imports), load=(load,),
                     run=("with torch.no_grad():",
                          "    result = module(torch.from_numpy(x))",
                          "outputs = [t.numpy() for t in (result if isinstance(result, (tuple, list)) else [result])]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        import torch

        progress("export")
        program, outputs = export_program(job)
        package = job.options["package"]
        path = workdir / MODEL_FILE
        files = [path]
        try:
            if package == "program":
                torch.export.save(program, str(path), extra_files={"metadata.json": json.dumps(job.metadata)})
            else:
                progress("compile")
                files.append(write_metadata(job, workdir))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        except Exception as exc:  # noqa: BLE001 - the compiler's own failure, in one line
            raise resource_error(exc, "export") or ExporterError(
                f"AOTInductor compilation failed: {one_line(exc)}", stage="export") from None
        info, warn = program_info(job, program, outputs,
                                  "torch.export" + (" + AOTInductor" if package == "aoti" else ""))
        info["package"] = package
        return ExportArtifact(files=files, runner=self.load(path, info), info=info, warnings=warn)
