"""Core ML (``.mlpackage``, zipped for download): ``coremltools`` converts the traced module to an ML program,
computing in fp32 or fp16, with the metadata in the package's ``user_defined_metadata``.

Core ML runs only on Apple platforms: coremltools converts on Linux but cannot ``predict`` there. Here the verdict is
``unverified`` (never ``passed``): the package is read back and its inputs, outputs and metadata are checked against
the PyTorch model. On macOS the same code validates it with ``MLModel.predict``.
"""

from __future__ import annotations

import functools
import platform
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from exporter.capabilities import DATA_DEPENDENT_SHAPE, DEFORMABLE_ATTENTION, SLICE_UPDATE
from exporter.errors import ExporterError, FormatUnavailableError, OutputFileError, one_line, resource_error
from exporter.formats.registry import (
    FP16_TOLERANCE,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    io_info,
    register_format,
    traced,
)
from exporter.options import OptionSpec

PACKAGE, ARCHIVE = "model.mlpackage", "model.mlpackage.zip"
MAX_BATCH = 64
CANNOT_PREDICT = ("Core ML runs only on Apple platforms: coremltools converts on Linux but cannot run the model; "
                  "export on macOS to validate it with MLModel.predict")
DATA_DEPENDENT = ("coremltools cannot convert aten::Int of a data-dependent tensor: the post-processing sizes its "
                  "outputs by the number of candidate boxes, which Core ML needs known at conversion")
NO_SLICE_UPDATE = ("coremltools converts an in-place update of part of a tensor (Conditional DETR's `tmp[..., :2] += "
                   "reference`) into a scatter whose updates do not match the tensor's shape, whatever the batch")
NO_DEFORMABLE = ("coremltools cannot convert the reference-point grid of multi-scale deformable attention "
                 "(torch.meshgrid of a non-1-D tensor), whatever the batch")


def can_predict() -> bool:
    """Whether Core ML models can run here (macOS)."""
    return platform.system() == "Darwin"


class CoreMlRunner:
    """An ML program run by Core ML (macOS only)."""

    def __init__(self, package: Path, input_name: str, output_names: list[str]) -> None:
        import coremltools as ct

        self.model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.input_name, self.output_names = input_name, output_names

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.model.predict({self.input_name: next(iter(inputs.values()))})
        return [np.asarray(result[name]) for name in self.output_names]

    def close(self) -> None:
        self.model = None


@register_format("coreml", display_name="Core ML", suffix=".mlpackage.zip")
class CoreMlFormat(ExportFormat):
    """Apple's on-device runtime (iOS, macOS): an ML program for the Neural Engine, GPU or CPU."""

    stages = ("export", "convert", "check")
    runtime_modules = ("coremltools",)
    no_triton = "Triton Inference Server has no Core ML backend (Core ML runs on Apple devices)"
    no_server = "Core ML files predict only on macOS; the bundle's server and its container run Linux"
    variants = (("fp16", {}), ("fp32", {"precision": "fp32"}))
    packages = ("coremltools",)
    reduced_precision = {("precision", "fp16"): FP16_TOLERANCE}
    cannot = {DATA_DEPENDENT_SHAPE: DATA_DEPENDENT, SLICE_UPDATE: NO_SLICE_UPDATE, DEFORMABLE_ATTENTION: NO_DEFORMABLE}
    note = ("For iOS/macOS apps. Core ML cannot run on Linux: exports made here are 'unverified' — structure, "
            "inputs and outputs checked, numbers not — until validated on a Mac.")
    format_options = (
        OptionSpec("precision", "choice", "fp16",
                   "Compute precision of the ML program: fp16 (Core ML's default; the Neural Engine computes in "
                   "fp16) or fp32.", choices=("fp16", "fp32"), label="Compute precision"),
    )

    @classmethod
    def runs_here(cls) -> str:
        return "" if can_predict() else CANNOT_PREDICT

    def load(self, path: Path, model: dict[str, Any]) -> CoreMlRunner:
        if not can_predict():
            raise FormatUnavailableError(f"{CANNOT_PREDICT}.")
        package = path.with_suffix("")  # model.mlpackage beside the archive
        if not package.is_dir():
            with zipfile.ZipFile(path) as archive:
                archive.extractall(path.parent)
        return CoreMlRunner(package, model["inputs"][0]["name"], [o["name"] for o in model["outputs"]])

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        outputs = [o["name"] for o in model.get("outputs") or []]
        name = (model.get("inputs") or [{"name": "input"}])[0]["name"]
        return Usage(imports=("import zipfile", "import coremltools as ct  # predicts on macOS only"),
                     load=(f'zipfile.ZipFile("{file}").extractall(".")',
                           f'model = ct.models.MLModel("{PACKAGE}")'),
                     run=(f'result = model.predict({{"{name}": x}})',
                          f"outputs = [result[name] for name in {outputs!r}]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        progress("export")
        module, outputs = traced(job, "coremltools")
        progress("convert")
        package = workdir / PACKAGE
        _convert(job, module, package)
        progress("check")
        info = {**io_info(job, outputs),
                "exporter": f"coremltools {_version()}", "precision": job.options["precision"]}
        checks = structure_checks(package, job)
        archive = workdir / ARCHIVE
        _zip(package, archive)
        why = self.runs_here()
        runner = None if why else CoreMlRunner(package, job.input_names[0], list(job.output_names))
        return ExportArtifact(files=[archive], runner=runner, info=info, unverified=why, checks=checks)


def _version() -> str:
    import coremltools as ct

    return ct.__version__


@functools.cache  # once per process
def _mend_converter() -> None:
    """Three gaps of coremltools 9 that transformers' and anomalib's models meet, mended with exact
    equivalents (the package is still read back and checked against the PyTorch model):

    - ``Tensor.new_ones`` has no converter (``new_zeros`` and ``ones`` have; transformers' attention masks start
      from one: DETR, Conditional DETR): the same fill with 1, cast to the asked dtype as ``ones`` does.
    - ``int()`` / ``bool()`` of a one-element constant calls ``int(array)``, which NumPy 2 refuses for an array
      that is not 0-d ("only 0-dimensional arrays can be converted to Python scalars": SegFormer, Mask2Former,
      DETR): the element is taken first.
    - ``torch.where`` of three scalars broadcasts them to a shape of no dimensions, which it cannot build ("Concat
      got 0 values": anomalib's normalisation of its thresholds): scalars are already broadcast, and are kept.
    """
    from coremltools.converters.mil import Builder as mb  # noqa: N813 - coremltools' own name for it
    from coremltools.converters.mil.frontend import _utils
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    def new_ones(context: Any, node: Any) -> None:
        inputs = ops._get_inputs(context, node)
        shape = mb.concat(values=inputs[1], axis=0) if isinstance(inputs[1], list) else inputs[1]
        if shape.val is not None:  # a size known at conversion; () — a scalar — arrives as an empty float tensor
            shape = np.asarray(shape.val, dtype=np.int32)
        dtype = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].val is not None else None
        if dtype is None:
            context.add(mb.fill(shape=shape, value=1.0, name=node.name))
        else:
            context.add(ops._cast_to(mb.fill(shape=shape, value=1.0), ops.NUM_TO_DTYPE_STRING[dtype.val], node.name))

    if "new_ones" not in _TORCH_OPS_REGISTRY:  # a later coremltools's own converter is kept
        register_torch_op(new_ones)

    cast = ops._cast

    def one_element_cast(context: Any, node: Any, dtype: type, dtype_name: str) -> None:
        x = ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
            context.add(mb.const(val=dtype(np.asarray(x.val).item()), name=node.name), node.name)
        else:
            cast(context, node, dtype, dtype_name)

    ops._cast = one_element_cast
    broadcast = _utils.pymil_broadcast_tensors
    _utils.pymil_broadcast_tensors = lambda tensors: (
        tensors if all(len(t.shape) == 0 for t in tensors) else broadcast(tensors))


def _convert(job: ExportJob, traced: Any, package: Path) -> None:
    """``traced`` → an ML program at ``package``: named input and outputs, the batch a range when it is dynamic."""
    import coremltools as ct

    _mend_converter()

    n, c, h, w = job.input_shape
    batch = ct.RangeDim(1, MAX_BATCH, default=n) if job.dynamic_batch else n
    precision = ct.precision.FLOAT16 if job.options["precision"] == "fp16" else ct.precision.FLOAT32
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ct.convert(traced, inputs=[ct.TensorType(name=job.input_names[0], shape=ct.Shape((batch, c, h, w)),
                                                             dtype=np.float32)],
                               outputs=[ct.TensorType(name=name) for name in job.output_names],
                               convert_to="mlprogram", compute_precision=precision,
                               minimum_deployment_target=ct.target.iOS16)
        model.short_description = f"{job.metadata['architecture']} ({job.metadata['task']}) — AI Studio Export"
        model.user_defined_metadata.update(job.metadata)
        model.save(str(package))
    except OSError as exc:
        raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "export") or ExporterError(
            f"coremltools conversion failed: {one_line(exc)}", stage="export") from None


def structure_checks(package: Path, job: ExportJob) -> list[str]:
    """Read the saved package back and check its input, outputs and metadata against the job.

    Raises:
        ExporterError: the package does not describe the model it was made from.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    description = spec.description
    inputs = [(i.name, list(i.type.multiArrayType.shape)) for i in description.input]
    outputs = [o.name for o in description.output]
    metadata = dict(description.metadata.userDefined)
    problems = []
    if [name for name, _ in inputs] != [job.input_names[0]] or inputs[0][1][1:] != list(job.input_shape[1:]):
        problems.append(f"input {inputs} is not {job.input_names[0]} {list(job.input_shape)}")
    if outputs != list(job.output_names):
        problems.append(f"outputs {outputs} are not {list(job.output_names)}")
    if any(metadata.get(k) != v for k, v in job.metadata.items()):
        problems.append("the metadata did not survive saving")
    if problems:
        raise ExporterError(f"The Core ML package does not describe the model: {'; '.join(problems)}.", stage="export")
    batch = f"1…{MAX_BATCH}" if job.dynamic_batch else str(job.input_shape[0])
    ops = sum(len(block.operations) for function in spec.mlProgram.functions.values()
              for block in function.block_specializations.values())
    return [f"input `{inputs[0][0]}`: float32 [{batch}, {', '.join(map(str, job.input_shape[1:]))}] as PyTorch's",
            f"outputs {', '.join(f'`{name}`' for name in outputs)}: names and order as PyTorch's",
            f"ML program of {ops} operations, compute precision {job.options['precision']}, iOS 16 / macOS 13 or later",
            f"metadata: {len(job.metadata)} keys in user_defined_metadata (task, classes, normalisation, …)"]


def _zip(package: Path, archive: Path) -> None:
    """The ``.mlpackage`` folder as one stored zip (exports are files; Xcode and coremltools open the folder)."""
    try:
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
            for path in sorted(package.rglob("*")):
                if path.is_file():
                    out.write(path, path.relative_to(package.parent))
    except OSError as exc:
        raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
