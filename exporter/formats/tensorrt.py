"""TensorRT engines: available only with the ``tensorrt`` package **and** a CUDA GPU.

Building and running engines needs a GPU, which CI does not have; until an engine build is
verified on one, the format reports itself unavailable with the reason even where TensorRT
imports, and its availability logic is unit-tested.
"""

from __future__ import annotations

import importlib.util

from exporter.formats.registry import ExportFormat, register_format
from exporter.options import OptionSpec


def cuda_gpu() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable here, with the reason when it is not."""
    try:
        import torch
    except ImportError:
        return False, "needs torch with CUDA"
    if not torch.cuda.is_available():
        return False, "needs an NVIDIA GPU with CUDA; none was found"
    return True, torch.cuda.get_device_name(0)


@register_format("tensorrt", display_name="TensorRT", suffix=".engine")
class TensorRtFormat(ExportFormat):
    """TensorRT engine built from the ONNX export (engines are tied to one TensorRT/CUDA/GPU)."""

    format_options = (
        OptionSpec("precision", "choice", "fp32", "fp16 comes from an FP16 ONNX (TensorRT 11 has no flags).",
                   choices=("fp32", "fp16")),
        OptionSpec("max_batch", "int", 8, "Largest batch the engine's optimisation profile accepts.",
                   minimum=1, maximum=64),
    )

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "install the tensorrt package (requirements-gpu.txt) on a machine with an NVIDIA GPU"
        gpu, reason = cuda_gpu()
        if not gpu:
            return False, reason
        return False, "engine build not yet verified on a GPU (Coming Soon)"
