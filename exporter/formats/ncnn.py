"""ncnn (``model.ncnn.param`` + ``model.ncnn.bin``): ``pnnx`` converts the traced module to ncnn's graph.

Validated by the ``ncnn`` Python package (the same C++ library apps link), one image at a time: ncnn's ``Mat`` has
no batch axis, so the batch is fixed at 1. ``precision=fp16`` stores fp16 weights and lets ncnn compute in fp16
where the CPU can; fp32 turns every fp16/bf16 path off. The metadata travels beside as ``metadata.json``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from exporter.capabilities import DEFORMABLE_ATTENTION, NMS, ROI_ALIGN, SELECT, TOPK_GATHER
from exporter.errors import ExporterError, InvalidOptionError, OutputFileError, one_line, resource_error
from exporter.formats.registry import (
    FP16_TOLERANCE,
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    Usage,
    io_info,
    register_format,
    traced,
    write_metadata,
)
from exporter.options import OptionSpec

PARAM_FILE, BIN_FILE = "model.ncnn.param", "model.ncnn.bin"
FIXED_BATCH = "ncnn runs one image at a time (its Mat has no batch axis)"
NO_DETECTION_LAYERS = "ncnn has no layer for torchvision::nms or torchvision::roi_align (the in-graph post-processing)"
NO_TOPK = "ncnn has no TopK or Gather layer (torch.topk, torch.gather: picking the best detections)"
NO_SELECT = ("ncnn has no layer for torch.gt, torch.lt or torch.where (anomalib's post-processor normalises the "
             "scores with them)")
PNNX_CRASH = "pnnx, which makes ncnn files, crashes (exit -11) converting Mask2Former's graph"
FP16_SWITCHES = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage")


def unknown_layers(param: Path) -> list[str]:
    """Layer types in an ncnn ``.param`` this ncnn build has no implementation for (pnnx writes the PyTorch
    operator it could not map, e.g. ``torch.index_select``)."""
    import ncnn

    lines = param.read_text().splitlines()[2:]  # magic number, then layer and blob counts
    return sorted({line.split()[0] for line in lines if line.strip() and ncnn.layer_to_index(line.split()[0]) < 0})


class NcnnRunner:
    """An ncnn ``Net`` on the CPU; each image of a batch goes through its own extractor."""

    def __init__(self, param: Path, outputs: list[dict[str, Any]], fp16: bool = False, threads: int = 0) -> None:
        import ncnn

        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        for switch in FP16_SWITCHES if not fp16 else ():
            setattr(self.net.opt, switch, False)
        if threads:
            self.net.opt.num_threads = threads
        if self.net.load_param(str(param)) or self.net.load_model(str(param.with_name(BIN_FILE))):
            raise ExporterError(f"ncnn could not load {param.name} / {BIN_FILE}.", stage="validate")
        self.shapes = [[int(d) if isinstance(d, int) else 1 for d in o["shape"]] for o in outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import ncnn

        # ncnn.Mat wraps the array's memory: the batch must outlive each extraction (a temporary copy freed
        # early fed ncnn garbage — wrong scores on non-contiguous inputs).
        batch = np.ascontiguousarray(next(iter(inputs.values())), dtype=np.float32)
        per_image = []
        for image in batch:
            extractor = self.net.create_extractor()
            mat = ncnn.Mat(image)
            extractor.input("in0", mat)
            per_image.append([np.array(extractor.extract(f"out{i}")[1]).reshape(shape[1:] if shape else ())
                              for i, shape in enumerate(self.shapes)])
            del extractor, mat
        return [np.stack(column) for column in zip(*per_image, strict=True)]

    def close(self) -> None:
        self.net = None


@register_format("ncnn", display_name="ncnn", suffix=".param")
class NcnnFormat(ExportFormat):
    """Tencent's inference library for phones and ARM boards (Android, iOS, Raspberry Pi, Jetson CPU)."""

    stages = ("export", "convert")
    runtime_modules = ("ncnn",)
    variants = (("fp32", {}), ("fp16", {"precision": "fp16"}))
    packages = ("pnnx", "ncnn")
    reduced_precision = {("precision", "fp16"): FP16_TOLERANCE}
    cannot = {NMS: NO_DETECTION_LAYERS, ROI_ALIGN: NO_DETECTION_LAYERS, TOPK_GATHER: NO_TOPK, SELECT: NO_SELECT,
              DEFORMABLE_ATTENTION: PNNX_CRASH}
    fixed_batch = FIXED_BATCH
    note = "For Android/iOS apps and ARM boards; one image per call (batch 1)."
    format_options = (
        OptionSpec("precision", "choice", "fp32",
                   "fp16: half the .bin, and ncnn computes in fp16 where the CPU supports it (ARMv8.2, AVX-512 "
                   "FP16); fp32 keeps both in fp32.", choices=("fp32", "fp16"), label="Precision"),
    )

    def check_options(self, options: dict[str, Any]) -> None:
        super().check_options(options)
        if options.get("input_shape") and options["input_shape"][0] != 1:
            raise InvalidOptionError(f"ncnn files take batch 1 ({FIXED_BATCH}); use input_shape 1,C,H,W.")

    def load(self, path: Path, model: dict[str, Any]) -> NcnnRunner:
        return NcnnRunner(path, model.get("outputs") or [], fp16=model.get("precision") == "fp16")

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        import ncnn

        fp16 = options["precision"] == "fp16"
        return Deployed(NcnnRunner(path, model.get("outputs") or [], fp16=fp16, threads=threads), {
            "runtime": f"ncnn {ncnn.__version__}", "device": "cpu", "threads": threads,
            "precision": "fp16 where the CPU supports it" if fp16 else "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        bin_file = str(Path(file).with_name(BIN_FILE))
        outputs = len(model.get("outputs") or [None])
        return Usage(imports=("import ncnn", "import numpy as np"),
                     load=("net = ncnn.Net()", f'net.load_param("{file}")', f'net.load_model("{bin_file}")'),
                     run=("extractor = net.create_extractor()",
                          'extractor.input("in0", ncnn.Mat(np.ascontiguousarray(x[0])).clone())  # one image',
                          f'outputs = [np.array(extractor.extract(f"out{{i}}")[1])[None] for i in range({outputs})]'))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        progress("export")
        scratch = workdir / "pnnx"
        scratch.mkdir(exist_ok=True)
        module, outputs = traced(job, "pnnx")
        try:
            module.save(str(scratch / "model.pt"))
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        progress("convert")
        param = _pnnx(scratch, workdir, job)
        if missing := unknown_layers(param):
            raise ExporterError(f"ncnn has no layer for {', '.join(missing)}: pnnx could not map "
                                f"{'this operator' if len(missing) == 1 else 'these operators'} of the model to ncnn. "
                                "Replace it in the model, or export to a format that carries it (ONNX, pt2).",
                                stage="export")
        info = {**io_info(job, outputs), "exporter": "pnnx",
                "precision": job.options["precision"]}
        runner = NcnnRunner(param, info["outputs"], fp16=job.options["precision"] == "fp16")
        return ExportArtifact(files=[param, workdir / BIN_FILE, write_metadata(job, workdir)], runner=runner,
                              info=info, warnings=[f"fixed batch 1: {FIXED_BATCH}"])


def _pnnx(scratch: Path, workdir: Path, job: ExportJob) -> Path:
    """Run the pnnx converter on ``scratch/model.pt``; the ncnn files land in ``workdir``, the rest in ``scratch``."""
    from pnnx import EXEC_PATH

    param = workdir / PARAM_FILE
    shape = ",".join(str(d) for d in job.input_shape)
    command = [EXEC_PATH, "model.pt", f"inputshape=[{shape}]f32", "device=cpu", f"ncnnparam={param}",
               f"ncnnbin={workdir / BIN_FILE}", f"fp16={int(job.options['precision'] == 'fp16')}"]
    try:
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExporterError(f"pnnx did not run: {one_line(exc)}", stage="export") from None
    if done.returncode != 0 or not param.is_file():
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise ExporterError(f"pnnx failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}",
                            stage="export")
    return param
