"""The format registry: one class per format, registered by decorator.

    @register_format("onnx", display_name="ONNX", suffix=".onnx")
    class OnnxFormat(ExportFormat): ...

Availability is detected at call time (packages, GPU), never hard-coded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from exporter.capabilities import refusal
from exporter.errors import (
    ExporterError,
    FormatUnavailableError,
    InvalidOptionError,
    UnknownFormatError,
    one_line,
    resource_error,
)
from exporter.options import COMMON_OPTIONS, OptionSpec
from exporter.tasks import task_traits

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from exporter.models.spec import ModelSpec

_FORMATS: dict[str, type[ExportFormat]] = {}
Progress = Callable[[str], None]


@runtime_checkable
class Runner(Protocol):
    """A loaded exported file that can be run on numpy inputs, and closed when done."""

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the export's output order."""
        ...

    def close(self) -> None:
        """Release the runtime (sessions, child processes, GPU memory); idempotent."""
        ...


@dataclass(frozen=True)
class Usage:
    """How a user's own Python opens the file and runs it on ``x`` (float32 numpy ``[N, C, H, W]``).

    ``run`` ends with ``outputs``: a list of numpy arrays in the export's output order.
    """

    imports: tuple[str, ...]
    load: tuple[str, ...]
    run: tuple[str, ...]


@dataclass(frozen=True)
class ExportJob:
    """Everything a format needs to write one file."""

    module: nn.Module
    spec: ModelSpec
    input_shape: tuple[int, int, int, int]
    dynamic_batch: bool
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    options: dict[str, Any]
    metadata: dict[str, str]
    calibration: Any = None  # np.ndarray [N, C, H, W] of normalised sample/synthetic images


class TorchRunner:
    """A PyTorch module (eager or TorchScript) run in this process under ``inference_mode``, on
    ``device`` (inputs copied there, outputs back: what a caller holding numpy arrays pays)."""

    def __init__(self, module: Any, device: str = "cpu") -> None:
        self.module, self.device = module.to(device), device

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(next(iter(inputs.values()))).to(self.device))
        return [o.cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    def close(self) -> None:
        self.module = None


@dataclass(frozen=True)
class Deployed:
    """An exported file opened as it would be deployed (``ExportFormat.deploy``), for benchmarks.

    ``settings`` names the runtime and what was set (threads, optimisation level, hint) and the
    ``precision`` it computes at; ``differs_from_validation`` is True when that precision is not the
    one validation ran at — then ``tolerance`` is the one to validate it with.
    """

    runner: Runner
    settings: dict[str, Any]
    differs_from_validation: bool = False
    tolerance: float = 1e-4


@dataclass
class ExportArtifact:
    """What ``export`` produced in its work folder: files (primary first) and a live runner.

    A file no runtime here can run has ``runner=None`` and ``unverified`` says why; ``checks`` then lists what was
    verified without running it (structure, inputs and outputs).
    """

    files: list[Path]
    runner: Runner | None
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unverified: str = ""
    checks: list[str] = field(default_factory=list)


METADATA_FILE = "metadata.json"
DEFAULT_FORMAT = "onnx"  # what an export makes when the request names no format
RECORD_PACKAGES = ("onnx", "onnxruntime", "onnxsim")  # versions a record's environment carries (beside torch)
RUNTIME_PACKAGES = ("onnxruntime", "openvino", "tensorrt")  # runtime versions a machine stamp carries
REFERENCE_FILE = "reference-fp32.onnx"  # the float graph a reduced-precision file was made from (work folder only)
GRAPH_DIAGNOSIS, IR_DIAGNOSIS = "graph", "ir"  # ``ExportFormat.diagnosis``
FP16_TOLERANCE = 1e-2  # default tolerances of reduced-precision files (``ExportFormat.reduced_precision``)
INT8_TOLERANCE = 5e-2
MIN_AGREEMENT = 0.99  # task agreement (top-1, match rate, pixels) that lets a reduced-precision file pass


def write_metadata(job: ExportJob, workdir: Path) -> Path:
    """The job's metadata as ``metadata.json`` beside a file that cannot hold it (downloaded together)."""
    path = workdir / METADATA_FILE
    path.write_text(json.dumps(job.metadata, indent=2))
    return path


def example_input(job: ExportJob, batch: int | None = None) -> Any:
    """A seeded random input of the job's shape (``batch`` images instead of the job's, when given)."""
    import torch

    n, c, h, w = job.input_shape
    return torch.rand(batch or n, c, h, w, generator=torch.Generator().manual_seed(0))


def traced(job: ExportJob, tool: str) -> tuple[Any, Any]:
    """``(torch.jit.trace of the job's module, its outputs)`` at the example input: what converters that read
    TorchScript start from (``tool`` names the converter in the error).

    Raises:
        ExporterError: tracing failed.
    """
    import warnings

    import torch

    example = example_input(job)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.jit.trace(job.module, example, check_trace=False), job.module(example)
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "export") or ExporterError(
            f"torch.jit.trace ({tool}'s input) failed: {one_line(exc)}", stage="export") from None


def io_info(job: ExportJob, outputs: Any = None) -> dict[str, Any]:
    """The record's ``inputs``/``outputs`` for a file made from ``job``; ``outputs`` (PyTorch's, at the example
    input: a tensor or a tuple) fill in the output shapes, batch axis named when it is dynamic."""
    if outputs is not None and not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    n, c, h, w = job.input_shape
    batch = "batch" if job.dynamic_batch else n
    shapes = [[batch, *o.shape[1:]] if o.dim() else [] for o in outputs] if outputs is not None else None
    return {"inputs": [{"name": job.input_names[0], "shape": [batch, c, h, w], "dtype": "float32"}],
            "outputs": [{"name": name, "shape": shapes[i] if shapes else [],
                         "dtype": str(outputs[i].dtype).removeprefix("torch.") if shapes else "float32"}
                        for i, name in enumerate(job.output_names)]}


def needed(task: str | None, needs: frozenset[str] | None) -> frozenset[str]:
    """What a model's graphs need: its family's ``needs`` when it says, else its task's."""
    if needs is not None:
        return needs
    traits = task_traits(task)
    return traits.needs if traits else frozenset()


class ExportFormat:
    """Base of every format: the same small interface (docs/contributing.md: Adding a format)."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    format_options: ClassVar[tuple[OptionSpec, ...]] = ()
    note: ClassVar[str] = ""  # a caveat every user of the format should read before choosing it
    stages: ClassVar[tuple[str, ...]] = ("export",)  # progress stages export() reports, in order
    runtime_modules: ClassVar[tuple[str, ...]] = ()  # what deploy() imports (a benchmark imports it first)
    # The precisions "export all" makes, each a label and the options that select it (first: the default).
    variants: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = (("fp32", {}),)
    # What this format cannot carry, in ``exporter.capabilities``' vocabulary, each with the reason (the operator
    # it lacks): a task whose graphs need one (``TaskTraits.needs``) is refused.
    cannot: ClassVar[Mapping[str, str]] = {}
    # What it carries only with a fixed batch (``dynamic_batch`` off), each with the reason.
    cannot_dynamic_batch: ClassVar[Mapping[str, str]] = {}
    fixed_batch: ClassVar[str] = ""  # why the file's batch is fixed ("" when it can be dynamic)
    packages: ClassVar[tuple[str, ...]] = ()  # the modules the format needs (is_available checks them)
    # Option values that make a reduced-precision file, each with its default tolerance: such a file may also
    # pass on task agreement (``min_agreement``).
    reduced_precision: ClassVar[Mapping[tuple[str, Any], float]] = {}
    tolerance: ClassVar[float] = 1e-4  # the default tolerance of a full-precision file
    needs_gpu: ClassVar[bool] = False  # building or running the file takes a GPU (a cluster job asks for one)
    # How a diagnosis reads the file's intermediate tensors: GRAPH_DIAGNOSIS (an ONNX graph, every tensor made an
    # output) or IR_DIAGNOSIS (an OpenVINO IR against the ONNX graph it came from); "" — ``not_diagnosable`` says why.
    diagnosis: ClassVar[str] = ""
    not_diagnosable: ClassVar[str] = "its runtime does not expose them"
    # Where a deploy bundle can serve the file (``exporter.deploy``). Triton: ``("platform" or "backend", its name)``
    # and the file name its backend looks for; empty — ``no_triton`` says why. ``triton_by_position``: Triton's
    # backend maps inputs and outputs by position (``INPUT__0``, ``OUTPUT__0``), not by name.
    triton: ClassVar[tuple[str, str]] = ()
    triton_file: ClassVar[str] = ""
    triton_by_position: ClassVar[bool] = False
    no_triton: ClassVar[str] = "Triton Inference Server has no backend for these files"
    ovms: ClassVar[bool] = False  # OpenVINO Model Server loads the file (ONNX, OpenVINO IR)
    no_ovms: ClassVar[str] = "OpenVINO Model Server loads only ONNX and OpenVINO IR files"
    no_server: ClassVar[str] = ""  # why the bundle's own Linux server cannot run the file ("" when it can)
    # A model library's own exporter that writes this format's files, ``{library: its module's method}``: its file
    # of the same model goes beside ours on the record (``yardstick``; the family's ``library``).
    library_exporters: ClassVar[Mapping[str, str]] = {}

    def diagnosed_against_float_graph(self, options: dict[str, Any]) -> bool:
        """Whether a diagnosis compares the file with the fp32 ONNX graph it was made from (made again from the
        checkpoint when the export's work folder is gone), rather than with PyTorch."""
        return self.diagnosis == IR_DIAGNOSIS or (
            self.diagnosis == GRAPH_DIAGNOSIS and self.min_agreement(options) is not None)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """``(True, "")`` when this format can run here, else ``(False, reason)``: the ``packages`` it needs."""
        import importlib.util

        if not cls.packages:
            return False, "Coming Soon"
        missing = [name for name in cls.packages if importlib.util.find_spec(name) is None]
        return (False, f"install {' and '.join(n.replace('_', '-') for n in missing)}") if missing else (True, "")

    @classmethod
    def runs_here(cls) -> str:
        """Why this machine cannot run the format's files ("" when it can): then exports are ``unverified`` and
        neither benchmarked nor evaluated."""
        return ""

    @classmethod
    def variant_label(cls, options: dict[str, Any]) -> str:
        """The label of the variant ``options`` select (the most specific one that matches)."""
        matching = [(len(opts), label) for label, opts in cls.variants
                    if all(options.get(k) == v for k, v in opts.items())]
        return max(matching)[1] if matching else cls.variants[0][0]

    @classmethod
    def options(cls) -> tuple[OptionSpec, ...]:
        """Every option this format accepts, common ones first (``dynamic_batch`` off where the batch is fixed)."""
        if not cls.fixed_batch:
            return COMMON_OPTIONS + cls.format_options
        fixed = tuple(dataclasses.replace(spec, default=False, help=f"Off: {cls.fixed_batch}.")
                      if spec.name == "dynamic_batch" else spec for spec in COMMON_OPTIONS)
        return fixed + cls.format_options

    def check_options(self, options: dict[str, Any]) -> None:
        """Reject option combinations that cannot work, before anything is started (formats that override it
        call it first)."""
        if self.fixed_batch and options.get("dynamic_batch"):
            raise InvalidOptionError(f"{self.display_name} files have a fixed batch: {self.fixed_batch}. Leave "
                                     "dynamic_batch off and choose the batch with input_shape.")

    def check_task(self, task: str | None, options: dict[str, Any], needs: frozenset[str] | None = None) -> None:
        """Refuse a task this format cannot carry (or cannot with these options), before starting; ``needs``:
        what this model's graphs need when its family says (a DETR needs no NMS), else the task's.

        Raises:
            FormatUnavailableError: the format cannot carry the task at all.
            InvalidOptionError: it can, but not with these options.
        """
        if why := self.cannot_carry(task, needs):
            raise FormatUnavailableError(f"Format {self.name!r} {why}.")
        if options.get("dynamic_batch") and (why := self.fixed_batch_only(task, needs)):
            raise InvalidOptionError(f"{self.display_name} cannot carry this model with a dynamic batch: {why}. "
                                     "Turn dynamic_batch off (the batch is then input_shape's).")

    @classmethod
    def cannot_carry(cls, task: str | None, needs: frozenset[str] | None = None) -> str:
        """Why this format cannot carry ``task`` models at all ("" when it can): what the task's graphs (or this
        model's, ``needs``) need meets what the format cannot carry."""
        reason = refusal(needed(task, needs), dict(cls.cannot))
        what = f"{task} models" if needs is None else f"this {task} model"  # a family's needs are its model's
        return f"cannot carry {what}: {reason}" if reason else ""

    @classmethod
    def fixed_batch_only(cls, task: str | None, needs: frozenset[str] | None = None) -> str:
        """Why this format carries this model only with a fixed batch ("" when a dynamic one works too)."""
        return refusal(needed(task, needs), dict(cls.cannot_dynamic_batch))

    def default_tolerance(self, options: dict[str, Any]) -> float:
        """Validation tolerance when the user gives none (follows the file's precision)."""
        return next((tolerance for (name, value), tolerance in self.reduced_precision.items()
                     if options.get(name) == value), self.tolerance)

    def min_agreement(self, options: dict[str, Any]) -> float | None:
        """Task agreement (e.g. top-1) that lets a reduced-precision file pass despite raw diffs."""
        reduced = any(options.get(name) == value for name, value in self.reduced_precision)
        return MIN_AGREEMENT if reduced else None

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        """Write the file(s) into ``workdir`` and return them with a runner.

        ``progress`` is called with each of ``stages`` as the export reaches it.
        """
        raise NotImplementedError

    def load(self, path: Path, model: dict[str, Any]) -> Runner:
        """Open an exported file for inference; ``model`` is its record's ``model`` section."""
        raise NotImplementedError

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """Open the file as a user would deploy it, with ``threads`` CPU threads (benchmarks time this).

        The default is ``load`` (the runtime's own defaults); formats override it to state their settings.
        """
        return Deployed(self.load(path, model), {"runtime": self.display_name, "threads": threads,
                                                 "precision": options.get("precision", "fp32")})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        """The code that opens ``file`` (as downloaded, beside the user's script) and runs it."""
        raise NotImplementedError

    def serving_usage(self, file: str, model: dict[str, Any]) -> Usage:
        """The code a deploy bundle's server runs the file with: ``usage``, computing as validation did (the golden
        outputs a bundle ships are the validated runner's)."""
        return self.usage(file, model)

    def serving_modules(self, model: dict[str, Any]) -> tuple[str, ...]:
        """The modules ``usage`` imports to run the file (a deploy bundle pins their packages, nothing else)."""
        return tuple(dict.fromkeys(name.split(".")[0] for name in self.runtime_modules))


def register_format(name: str, *, display_name: str, suffix: str):
    """Class decorator adding an ``ExportFormat`` to the registry."""

    def decorate(cls: type[ExportFormat]) -> type[ExportFormat]:
        cls.name, cls.display_name, cls.suffix = name, display_name, suffix
        _FORMATS[name] = cls
        return cls

    return decorate


# registration = display order
BUILTIN_FORMATS = ("onnx", "torchscript", "openvino", "tensorrt", "pt2", "executorch", "litert", "ncnn", "coreml")


def _load_builtin_formats() -> None:
    import importlib

    for module in BUILTIN_FORMATS:
        importlib.import_module(f"exporter.formats.{module}")


def format_names() -> list[str]:
    """Registered format keys, in registration order."""
    _load_builtin_formats()
    return list(_FORMATS)


def get_format(name: str, *, require_available: bool = True) -> ExportFormat:
    """The format registered as ``name``.

    Raises:
        UnknownFormatError: no such format (lists the registered ones).
        FormatUnavailableError: registered but not usable here (says why).
    """
    _load_builtin_formats()
    cls = _FORMATS.get(str(name).lower())
    if cls is None:
        raise UnknownFormatError(f"Unknown format {name!r}; known formats: {', '.join(_FORMATS)}.")
    available, reason = cls.is_available()
    if require_available and not available:
        raise FormatUnavailableError(f"Format {cls.name!r} is unavailable: {reason}.")
    return cls()


def get_available_formats(task: str | None = None, needs: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Every registered format with its availability (here, and for ``task`` — or for a model whose family says
    what it ``needs``) and options."""
    _load_builtin_formats()
    rows = []
    for cls in _FORMATS.values():
        available, reason = cls.is_available()
        if available and (why := cls.cannot_carry(task, needs)):
            available, reason = False, why
        rows.append({"name": cls.name, "display_name": cls.display_name, "suffix": cls.suffix,
                     "available": available, "reason": reason, "note": cls.note,
                     "options": [spec.describe() for spec in cls.options()]})
    return rows
