"""What torch.onnx cannot express: exact rewrites of modules it refuses, and failures explained.

**Rewrites.** The legacy exporter writes ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` only when the output
size divides the input size. VGG and AlexNet pool to 7×7 / 6×6 whatever the input, so at 32–64 px (a 1×1
or 2×2 map: CIFAR-sized inputs) they could not be exported. At the export's static input size such a
pooling is a fixed map — each output cell averages (or takes the max of) a known window — so while the
exporter traces, it is swapped for an exact equivalent: average pooling as two constant averaging
matrices (``rows @ x @ colsᵀ``), max pooling as the max over each window's slice. The original modules
are put back after the trace; PyTorch's model is what the file is validated against. The same pooling called
as a function in a forward (``F.adaptive_avg_pool2d``, ``F.interpolate(mode="area")``) is caught while the
legacy exporter traces (a ``TorchFunctionMode``) and computed the same exact way.

**Failures explained.** When every exporter fails, the model is searched for the smallest module that
fails alone: each sub-module is exported on its own with the input it received, and the search goes down
into the first one that fails. The message names its path, class, input shape and the operator, with
what the user can do, instead of the exporter's last line (``)  (type 'Tensor')``).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
MAX_SEARCH_EXPORTS = 200  # sub-module exports a failure search may try (each is a small trace)


def windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: output ``i`` covers ``[floor(i·size/out), ceil((i+1)·size/out))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def averaging_matrix(size: int, out: int) -> torch.Tensor:
    """``[out, size]``: row ``i`` holds ``1/len`` over window ``i`` (``matrix @ v`` averages each window)."""
    matrix = torch.zeros(out, size)
    for i, (start, end) in enumerate(windows(size, out)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class ExactAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d`` at one input size, as two constant matrices (MatMul in ONNX)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", averaging_matrix(in_size[0], out_size[0]))
        self.register_buffer("cols", averaging_matrix(in_size[1], out_size[1]).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows.to(x.dtype), x), self.cols.to(x.dtype))


class ExactAdaptiveMaxPool2d(nn.Module):
    """``AdaptiveMaxPool2d`` at one input size: the max over each window's slice, rows then columns."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.row_windows = windows(in_size[0], out_size[0])
        self.col_windows = windows(in_size[1], out_size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([x[:, :, a:b].amax(dim=2, keepdim=True) for a, b in self.row_windows], dim=2)
        return torch.cat([rows[:, :, :, a:b].amax(dim=3, keepdim=True) for a, b in self.col_windows], dim=3)


def _as_pair(size: Any) -> tuple:
    return (size, size) if isinstance(size, int) or size is None else tuple(size)


def _out_size(module: nn.Module, in_size: tuple[int, int]) -> tuple[int, int]:
    out = _as_pair(module.output_size)
    return (out[0] or in_size[0], out[1] or in_size[1])


def _inputs_seen(module: nn.Module, example: torch.Tensor, kinds: tuple[type, ...]) -> dict[str, tuple]:
    """The positional tensor inputs each sub-module of ``kinds`` got on its first call with ``example``."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, sub in module.named_modules():
        if name and isinstance(sub, kinds):
            def hook(_: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
                if name not in seen and not kwargs and args and all(isinstance(a, torch.Tensor) for a in args):
                    seen[name] = tuple(a.detach() for a in args)
            handles.append(sub.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@contextlib.contextmanager
def exact_rewrites(module: nn.Module, example: torch.Tensor, functional: bool = True) -> Iterator[list[str]]:
    """Swap every adaptive pooling whose output does not divide its input (at ``example``'s size), or whose size
    is partly ``None``, for its exact equivalent while the block runs; yields one line per rewrite for the
    export's warnings. With ``functional``, the same pooling called as a function in a forward
    (``F.adaptive_avg_pool2d``, ``F.interpolate(mode="area")``) is computed the exact way too
    (:class:`ExactFunctionalPools`; for the legacy exporter's trace)."""
    lines: list[str] = []
    swapped = _swap_pool_modules(module, example, lines)
    try:
        if functional:
            with ExactFunctionalPools(lines):
                yield lines
        else:
            yield lines
    finally:
        for parent, child, original in swapped:
            setattr(parent, child, original)
            del original.forward


def _swap_pool_modules(module: nn.Module, example: torch.Tensor, lines: list[str]) -> list[tuple]:
    """Put each adaptive pooling module the exporter would refuse out of the way: ``(parent, name, original)``
    per swap. The original's ``forward`` is pointed at the exact one too, for a model that also holds its layers
    in a plain list (transformers' UperNet) and calls them from there."""
    pools = [m for m in module.modules() if isinstance(m, ADAPTIVE_POOLS)]
    if all(_as_pair(m.output_size) == (1, 1) for m in pools):
        return []  # none, or only global pooling (1×1 divides every size): no forward pass needed
    swapped = []
    for name, (x, *_) in _inputs_seen(module, example, ADAPTIVE_POOLS).items():
        original = module.get_submodule(name)
        in_size = (int(x.shape[-2]), int(x.shape[-1]))
        out_size = _out_size(original, in_size)
        if x.dim() != 4 or (_divides(in_size, out_size) and None not in _as_pair(original.output_size)):
            continue  # (a None size is read from the input at run time: the exporter refuses that too)
        if isinstance(original, nn.AdaptiveMaxPool2d):
            if original.return_indices:
                continue  # indices have no exact slice form; the failure search names it
            exact, how = ExactAdaptiveMaxPool2d(in_size, out_size), "the max over each window's slice"
        else:
            exact, how = ExactAdaptiveAvgPool2d(in_size, out_size), "two constant averaging matrices"
        parent, _, child = name.rpartition(".")
        swapped.append((module.get_submodule(parent), child, original))
        setattr(module.get_submodule(parent), child, exact)
        object.__setattr__(original, "forward", exact.forward)  # an attribute, not a registered sub-module
        lines.append(f"rewrote {type(original).__name__} at `{name}` ({_size(in_size)} → {_size(out_size)} at "
                     f"input {_size(tuple(example.shape[-2:]))}) as {how} — exact, at this input size only")
    return swapped


def _divides(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    return all(i % o == 0 for i, o in zip(in_size, out_size, strict=True))


class ExactFunctionalPools(TorchFunctionMode):
    """While active, adaptive pooling called as a function on a 4-D tensor — ``F.adaptive_avg_pool2d``,
    ``F.adaptive_max_pool2d`` without indices, ``F.interpolate(mode="area")`` (an adaptive average: smp's PSPNet
    pools this way when it sees an ONNX export) — whose output does not divide its input is computed by the exact
    modules above, so the trace holds MatMuls and slices instead of the operator the exporter refuses. Appends one
    line per distinct rewrite to ``lines``."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        call = _functional_pool(func, args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        name, x, out_size = call
        in_size = (int(x.shape[-2]), int(x.shape[-1]))
        if "max" in name:
            exact, how = ExactAdaptiveMaxPool2d(in_size, out_size), "the max over each window's slice"
        else:
            exact, how = ExactAdaptiveAvgPool2d(in_size, out_size), "two constant averaging matrices"
        line = (f"rewrote {name} called in a forward ({_size(in_size)} → {_size(out_size)}) as {how} — exact, at "
                "this input size only")
        if line not in self.lines:
            self.lines.append(line)
        return exact(x)


FUNCTIONAL_POOLS = {"adaptive_avg_pool2d": "adaptive_avg_pool2d", "adaptive_max_pool2d": "adaptive_max_pool2d",
                    "_adaptive_max_pool2d": "adaptive_max_pool2d", "interpolate": "interpolate(mode='area')"}


def _functional_pool(func: Any, args: tuple, kwargs: dict) -> tuple[str, torch.Tensor, tuple[int, int]] | None:
    """``(name, input, output size)`` when ``func(*args, **kwargs)`` is an adaptive pooling the legacy exporter
    refuses (a 4-D input whose size the output does not divide), else None."""
    name = FUNCTIONAL_POOLS.get(getattr(func, "__name__", ""))
    x = args[0] if args else kwargs.get("input")
    if name is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    names = ("input", "size", "scale_factor", "mode") if name.startswith("interpolate") else \
        ("input", "output_size", "return_indices")
    given = dict(zip(names, args, strict=False)) | kwargs
    in_size = (int(x.shape[-2]), int(x.shape[-1]))
    if name.startswith("interpolate"):
        if given.get("mode") != "area":
            return None
        out = _area_size(in_size, given.get("size"), given.get("scale_factor"))
    else:
        if given.get("return_indices"):
            return None
        out = _as_pair(given.get("output_size"))
        out = (out[0] or in_size[0], out[1] or in_size[1])
    if out is None or _divides(in_size, out):
        return None
    return name, x, (int(out[0]), int(out[1]))


def _area_size(in_size: tuple[int, int], size: Any, scale: Any) -> tuple[int, int] | None:
    """The output size ``F.interpolate`` computes for mode 'area' from ``size`` or ``scale_factor``."""
    if size is not None:
        return _as_pair(size)
    if scale is None:
        return None
    scales = _as_pair(scale)
    return int(in_size[0] * scales[0]), int(in_size[1] * scales[1])


def _size(hw: tuple) -> str:
    return "×".join(str(int(v)) for v in hw)


# -- failures explained ---------------------------------------------------------------------------------
def exporter_reason(exc: BaseException) -> str:
    """The exporter's own first sentence (``Exporting the operator 'aten::i0' … is not supported``), without the
    TorchScript graph and the 'feel free to request support' banner that follow it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    for cut in (" Please feel free", " [Caused by", " Torch IR graph"):
        first = first.split(cut)[0]
    return first.rstrip(". ")


def failed_operator(text: str) -> str | None:
    """The operator an exporter message names (``aten::i0``, ``adaptive_avg_pool2d``), if any."""
    match = re.search(r"operator '?([\w:.]+)'?", text) or re.search(r"\baten::(\w+)", text)
    return match.group(1).rstrip(",") if match else None


def locate_failure(module: nn.Module, example: torch.Tensor, opset: int) -> dict[str, Any] | None:
    """The smallest sub-module that the legacy exporter fails on alone: ``{path, type, input_shape, reason,
    operator}``; None when no sub-module fails alone (the failure is in how they are combined)."""
    seen = _inputs_seen(module, example, (nn.Module,))
    found, parent, tries = None, module, MAX_SEARCH_EXPORTS
    while True:
        prefix = f"{found['path']}." if found else ""
        culprit = None
        for name, child in parent.named_children():
            if f"{prefix}{name}" in seen and tries > 0:
                tries -= 1
                if (error := _export_alone(child, seen[f"{prefix}{name}"], opset)) is not None:
                    culprit = (f"{prefix}{name}", child, error)
                    break
        if culprit is None:
            return found
        path, parent, error = culprit
        reason = exporter_reason(error)
        found = {"path": path, "type": type(parent).__name__, "input_shape": list(seen[path][0].shape),
                 "reason": reason, "operator": failed_operator(reason)}


def _export_alone(module: nn.Module, args: tuple, opset: int) -> BaseException | None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, io.BytesIO(), dynamo=False, opset_version=opset)
    except Exception as exc:  # noqa: BLE001 - the failure is what is looked for
        return exc
    return None


def explain(found: dict[str, Any] | None, example: torch.Tensor, opset: int) -> str:
    """One message a user can act on: where, what, at which size, and what to do."""
    size = _size(tuple(example.shape[-2:]))
    if found is None:
        return (f"no sub-module that can be exported alone fails at input {size}, so the failure is in how the "
                "model combines them (control flow or Python-side logic in a forward); try exporter=dynamo with "
                "opset_version ≥ 18")
    where = f"`{found['path']}` ({found['type']}, input {found['input_shape']})"
    op = found["operator"] or "an operator"
    if op and "adaptive" in op:
        fix = (f"the pooling's output must divide its input at this size: export at an input size where it does "
               f"(e.g. ≥ 224), or use nn.{_pool_class(op)} as a module, which the exporter rewrites exactly")
    else:
        fix = (f"try exporter=dynamo with opset_version ≥ 18, or replace {op} in that module with operators ONNX "
               f"opset {opset} has")
    return f"{op} in {where} cannot be exported at input {size}: {found['reason']}. What to do: {fix}"


def _pool_class(op: str) -> str:
    return "AdaptiveMaxPool2d" if "max" in op else "AdaptiveAvgPool2d"
