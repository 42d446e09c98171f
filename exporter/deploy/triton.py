"""A Triton Inference Server model repository for one export: ``<name>/config.pbtxt``, ``<name>/1/<files>``,
``labels.txt`` for a classifier and a warm-up sample.

The configuration is written from the record, never by running Triton: the format's platform or backend, the
batch axis (``max_batch_size`` 0 when the file's batch is fixed, dims then include it), every input and output with
its data type and dims (named axes become -1), dynamic batching with the benchmark's batch sizes as preferred ones,
the instance group (GPU for TensorRT) and ``model_warmup`` from the golden input.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exporter.deploy.bundle import Bundle

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
QUEUE_DELAY_US = 1000  # how long Triton holds a request to form a preferred batch
LABELS_FILE = "labels.txt"
WARMUP_FILE = "sample_input"


def write(bundle: Bundle, out: Path) -> Path:
    """The repository under ``out``; returns the model's folder."""
    folder = out / bundle.name
    version = folder / "1"
    version.mkdir(parents=True)
    for path in bundle.files:
        shutil.copy2(path, version / path.name)
    if bundle.task == "classification" and bundle.class_names:
        (folder / LABELS_FILE).write_text("\n".join(bundle.class_names) + "\n")
    warmup = folder / "warmup"
    warmup.mkdir()
    sample = bundle.golden_inputs[:1] if bundle.max_batch else bundle.golden_inputs  # raw bytes, as Triton reads
    (warmup / WARMUP_FILE).write_bytes(np.ascontiguousarray(sample).tobytes())
    (folder / "config.pbtxt").write_text(config_pbtxt(bundle))
    return folder


def io_names(bundle: Bundle) -> tuple[list[str], list[str]]:
    """Input and output names as Triton sees them: by position for backends that ignore names."""
    if bundle.fmt.triton_by_position:
        return ([f"INPUT__{i}" for i in range(len(bundle.inputs))],
                [f"OUTPUT__{i}" for i in range(len(bundle.outputs))])
    return [t["name"] for t in bundle.inputs], [t["name"] for t in bundle.outputs]


def dims(bundle: Bundle, shape: list[Any]) -> list[int]:
    """A tensor's dims in the configuration: without the batch axis when Triton batches, named axes as -1."""
    kept = shape[1:] if bundle.max_batch else shape
    return [d if isinstance(d, int) else -1 for d in kept]


def config_pbtxt(bundle: Bundle) -> str:
    """``config.pbtxt`` in protobuf text format (Triton's ``ModelConfig``)."""
    kind, value = bundle.fmt.triton
    inputs, outputs = io_names(bundle)
    lines = [f'name: "{bundle.name}"', f'{kind}: "{value}"', f"max_batch_size: {bundle.max_batch}"]
    if bundle.primary.name != bundle.fmt.triton_file:
        lines.append(f'default_model_filename: "{bundle.primary.name}"')
    lines += _tensors("input", inputs, bundle.inputs, bundle)
    lines += _tensors("output", outputs, bundle.outputs, bundle,
                      labels=bundle.task == "classification" and bool(bundle.class_names))
    if bundle.max_batch:
        preferred = [b for b in bundle.preferred_batches if 1 < b <= bundle.max_batch]
        lines += ["dynamic_batching {", *(f"  preferred_batch_size: {b}" for b in preferred),
                  f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}"]
    lines += ["instance_group [", f"  {{ count: 1 kind: {'KIND_GPU' if bundle.fmt.needs_gpu else 'KIND_CPU'} }}", "]"]
    lines += _warmup(bundle, inputs[0])
    return "\n".join(lines) + "\n"


def _tensors(kind: str, names: list[str], tensors: list[dict[str, Any]], bundle: Bundle,
             labels: bool = False) -> list[str]:
    lines = [f"{kind} ["]
    for i, (name, tensor) in enumerate(zip(names, tensors, strict=True)):
        shape = dims(bundle, tensor["shape"])
        parts = [f'name: "{name}"', f"data_type: {TRITON_TYPES[tensor['dtype']]}",
                 # one value per image ([batch]): Triton's way is dims [1] reshaped to a scalar
                 f"dims: [ {', '.join(str(d) for d in shape)} ]" if shape else "dims: [ 1 ] reshape: { shape: [ ] }"]
        if labels and i == 0:
            parts.append(f'label_filename: "{LABELS_FILE}"')
        lines.append("  { " + " ".join(parts) + (" }," if i < len(names) - 1 else " }"))
    return [*lines, "]"]


def _warmup(bundle: Bundle, input_name: str) -> list[str]:
    tensor = bundle.inputs[0]
    shape = [1, *tensor["shape"][1:]] if bundle.max_batch else list(bundle.golden_inputs.shape)
    return ["model_warmup [", "  {", '    name: "golden sample"', "    batch_size: 1", "    inputs {",
            f'      key: "{input_name}"', "      value {", f"        data_type: {TRITON_TYPES[tensor['dtype']]}",
            f"        dims: [ {', '.join(str(d) for d in dims(bundle, shape))} ]",
            f'        input_data_file: "{WARMUP_FILE}"', "      }", "    }", "  }", "]"]
