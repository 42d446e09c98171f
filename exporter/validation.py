"""Run PyTorch and the exported file on the same inputs and compare every output.

Pass rule per output: ``max |torch - exported| <= tolerance * max(1, max |torch|)`` — an
absolute tolerance scaled by the output's magnitude, because element-wise relative error is
dominated by near-zero values (docs/findings.md) and is reported for information only.
A reference that is constant or ~0 everywhere (an untrained net) makes the verdict
``inconclusive``: any tolerance would pass, so it proves nothing.

**The float64 referee.** Some networks amplify float32 rounding (large activations: efficientnet_v2_s
with lively random weights ends 28 000 off the exact answer on outputs of 40 000), so PyTorch float32 is
not the truth a float32 file can be held to. When a full-precision file misses the tolerance (and
nothing else is wrong), the PyTorch model runs again in float64 on the same inputs and both are
compared with it: the file passes when its error is at most ``REFEREE_MULTIPLE`` × PyTorch float32's
own, and fails otherwise, with both figures stored per output. A task's own misses (unmatched detections,
pixel disagreement) are held to the same multiple of PyTorch float32's misses against float64.
Two float32 computations that sum in different orders landed 0.5–3.8× apart (measured); a 1 % change to
one weight tensor lands 5–15× further than rounding wherever rounding stays under ~0.2 % of the output —
beyond that, float32 cannot tell them apart and the referee says so by passing only what is as close as
PyTorch itself.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from exporter.formats.registry import Runner

MAX_SAMPLE_IMAGES = 4
RANDOM_INPUTS = 2
VALIDATION_IMAGES = MAX_SAMPLE_IMAGES + RANDOM_INPUTS  # the head of a pool; the rest calibrates
DEGENERATE_ABS = 1e-6
REFEREE_MULTIPLE = 4.0  # the file may be this many times further from float64 than PyTorch float32 is
AGREEMENT_METRICS = ("top1_agreement", "pixel_agreement", "match_rate")  # what a task's users act on


@dataclass(frozen=True)
class OutputComparison:
    """How one output of the exported file compares with PyTorch."""

    name: str
    shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float | None  # None where not meaningful (task rows over matched pairs)
    allowed_abs_diff: float
    reference_min: float | None
    reference_max: float | None
    passed: bool
    histogram: dict[str, list[float]] = field(default_factory=dict)
    problem: str | None = None
    degenerate: bool = False
    note: str | None = None
    referee: dict[str, Any] | None = None


@dataclass(frozen=True)
class ValidationReport:
    """The verdict of one validation: ``passed``, ``failed``, ``inconclusive`` or ``unverified`` (the file
    cannot run here; ``messages`` say why and what was checked without running it)."""

    verdict: str
    max_diff: float | None
    tolerance: float
    batch_sizes: list[int]
    inputs: str
    outputs: list[OutputComparison]
    task_metrics: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    referee: str | None = None
    broken: bool = False  # the file failed to run, clashed in shape or answered NaN/Inf

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, Any]:
        """The ``export.json["validation"]`` form."""
        return {"passed": self.passed, **asdict(self)}


def unverified_report(reason: str, checks: list[str], tolerance: float) -> ValidationReport:
    """The report of a file no runtime here can run: never ``passed``; what was checked without running it."""
    return ValidationReport(verdict="unverified", max_diff=None, tolerance=tolerance, batch_sizes=[], inputs="none",
                            outputs=[], messages=[f"not run: {reason}", *checks])


def load_images(paths: list[Path], input_size: tuple[int, int, int],
                normalization: dict[str, list[float]]) -> torch.Tensor:
    """Images resized to ``input_size`` and normalised, as a float tensor ``[N, C, H, W]``."""
    import torch
    from PIL import Image

    c, h, w = input_size
    mode = "RGB" if c == 3 else "L"
    arrays = []
    for path in paths:
        with Image.open(path) as img:
            arr = np.asarray(img.convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        arrays.append(arr.reshape(h, w, -1).transpose(2, 0, 1))
    batch = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, c, h, w)
    return normalize(batch, normalization)


def normalize(batch: torch.Tensor, normalization: dict[str, list[float]]) -> torch.Tensor:
    """Apply per-channel mean/std when they match the channel count."""
    import torch

    mean, std = normalization.get("mean", []), normalization.get("std", [])
    if len(mean) != batch.shape[1] or len(std) != batch.shape[1]:
        return batch
    return (batch - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def input_pool(samples: list[Path], input_size: tuple[int, int, int],
               normalization: dict[str, list[float]], seed: int = 0,
               extra_random: int = 0) -> tuple[torch.Tensor, str]:
    """Up to 4 project samples, then seeded random images (2 + ``extra_random``), normalised.

    Validation uses the first few; static INT8 calibration may use them all.
    """
    import torch

    real = load_images(samples[:MAX_SAMPLE_IMAGES], input_size, normalization)
    generator = torch.Generator().manual_seed(seed)
    count = RANDOM_INPUTS + extra_random
    noise = normalize(torch.rand(count, *input_size, generator=generator), normalization)
    kind = "samples+random" if len(real) else "random"
    return torch.cat([real, noise]), kind


def validate(module: nn.Module, runner: Runner, *, input_name: str, output_names: tuple[str, ...],
             pool: torch.Tensor, pool_kind: str, batch_sizes: list[int], tolerance: float,
             task: str, min_agreement: float | None = None, n_samples: int = 0,
             settings: dict[str, Any] | None = None) -> ValidationReport:
    """Compare ``module`` and ``runner`` on every image of ``pool`` at each batch size.

    The first ``n_samples`` images of the pool are the project's samples; detection and
    segmentation need something detected there (``exporter.tasks.agreement``).

    Returns:
        A report with one ``OutputComparison`` per output; never raises for a mismatch.
    """
    from exporter.tasks import get_task

    task_model = get_task(task)
    pairs, messages = _run_batches(module, runner, input_name, pool, batch_sizes)
    settings = {**(settings or {}), "min_agreement": min_agreement}
    check = functools.partial(_comparisons, task_model, output_names=output_names, tolerance=tolerance,
                              n_samples=n_samples, settings=settings)
    outputs, metrics, task_messages, by_task = check(pairs)
    run_messages, messages = messages, [*messages, *task_messages]
    verdict = _verdict(outputs, messages, bool(pairs))
    referee = None
    if verdict == "failed" and min_agreement is None and not run_messages and all(o.problem is None for o in outputs):
        # PyTorch's own answer at each batch size the file ran at: its float32 rounding differs between them, and
        # the referee weighs the file against all of it
        pairs = [(i, _reference(module, pool[i]), c) for i, _, c in pairs]
        outputs, metrics, task_messages, by_task = check(pairs)
        messages = [*run_messages, *task_messages]
        outputs, referee, explained = _referee(module, pool, pairs, outputs, check)
        messages = run_messages if explained else messages  # what float32 rounding explains is said by the referee
        verdict = _verdict(outputs, messages, bool(pairs))
    if verdict == "failed" and _agreement_rescues(outputs, messages, metrics, min_agreement):
        verdict = "passed"
        messages = [*messages, f"passed on task agreement (≥ {min_agreement:.0%}) — raw diffs exceed the "
                    "tolerance, as expected at reduced precision"]
    if verdict == "passed" and by_task is not None and by_task.inconclusive:
        verdict, messages = "inconclusive", [*messages, by_task.inconclusive]
    max_diff = max((o.max_abs_diff for o in outputs), default=math.inf)
    broken = bool(run_messages) or not pairs or any(o.problem and not o.degenerate for o in outputs)
    return ValidationReport(verdict=verdict, max_diff=max_diff, tolerance=tolerance,
                            batch_sizes=list(batch_sizes), inputs=pool_kind, outputs=outputs,
                            task_metrics=metrics, messages=[*messages, *(by_task.notes if by_task else ())],
                            referee=referee, broken=broken)


def _comparisons(task_model: Any, pairs: list[tuple[list[int], list, list]], *, output_names: tuple[str, ...],
                 tolerance: float, n_samples: int, settings: dict[str, Any]):
    """``(outputs, metrics, messages, task check)`` of reference/candidate ``pairs``: the task's own
    comparison (matched detections, pixel agreement) where it has one, else tensor by tensor."""
    by_task = task_model.compare(pairs, output_names, tolerance, n_samples, settings) if pairs else None
    if by_task is None:
        return (_raw(pairs, output_names, tolerance) if pairs else []), task_model.agreement(pairs), [], None
    outputs = [_from_row(row) for row in by_task.rows]
    if not by_task.rows or output_names[0] == "logits":  # segmentation logits: raw diffs as well
        outputs = [*_raw(pairs, output_names, tolerance), *outputs]
    return outputs, by_task.metrics, by_task.messages, by_task


def _referee(module: nn.Module, pool: torch.Tensor, pairs: list[tuple[list[int], list, list]],
             outputs: list[OutputComparison], check: Callable) -> tuple[list[OutputComparison], str, bool]:
    """The outputs judged against PyTorch in float64 (see the module docstring), the finding in words, and whether
    the task's own misses (unmatched detections, pixel disagreement) are within the referee's multiple too."""
    try:
        exact = run_float64(module, pool)
    except Exception as exc:  # noqa: BLE001 - a wrapper that cannot run in float64 says so
        return outputs, f"float64 referee not available: the model cannot run in float64 ({one_line(exc, 200)})", False
    torch_outputs, torch_metrics, _, _ = check([(i, [e[i] for e in exact], r) for i, r, _ in pairs])
    file_outputs, file_metrics, _, _ = check([(i, [e[i] for e in exact], c) for i, _, c in pairs])
    torch_errors = {o.name: o.max_abs_diff for o in torch_outputs}
    file_errors = {o.name: o.max_abs_diff for o in file_outputs}
    judged, lines = [], []
    for output in outputs:
        if output.name not in torch_errors or output.name not in file_errors:
            judged.append(output)
            continue
        torch_error, file_error = torch_errors[output.name], file_errors[output.name]
        allowed = max(REFEREE_MULTIPLE * torch_error, output.allowed_abs_diff)
        passed = output.passed or file_error <= allowed
        judged.append(dataclasses.replace(output, passed=passed, referee={
            "torch_float32_error": torch_error, "file_error": file_error, "allowed": allowed,
            "multiple": REFEREE_MULTIPLE, "passed": passed}))
        if not output.passed:
            lines.append(f"{output.name}: PyTorch float32 differs from the float64 result by {torch_error:.3g}, "
                         f"the file by {file_error:.3g}")
    explained, miss_lines = _misses_explained(torch_metrics, file_metrics)
    held = all(o.passed for o in judged) and explained
    head = ("within float32 rounding — " if held else
            f"the file is further from the float64 result than {REFEREE_MULTIPLE:g}× PyTorch float32's own — ")
    return judged, head + "; ".join(lines + miss_lines), explained


MISS_COUNTS = ("unmatched_reference", "unmatched_exported")  # detections without a counterpart: fewer is better


def _misses_explained(torch_metrics: dict[str, float], file_metrics: dict[str, float]) -> tuple[bool, list[str]]:
    """Whether the file misses the float64 result's answers (1 − agreement, unmatched detections) at most
    ``REFEREE_MULTIPLE`` × as often as PyTorch float32 does — near-tied scores pick other boxes in both."""
    misses = {k: (1 - torch_metrics[k], 1 - file_metrics[k]) for k in AGREEMENT_METRICS
              if k in torch_metrics and k in file_metrics}
    misses.update({k: (torch_metrics[k], file_metrics[k]) for k in MISS_COUNTS if k in torch_metrics})
    explained = all(mine <= REFEREE_MULTIPLE * theirs + 1e-12 for theirs, mine in misses.values())
    lines = [f"{k.replace('_', ' ')}: PyTorch float32 {1 - t:.1%}, the file {1 - f:.1%} of the float64 result"
             for k, (t, f) in misses.items() if k in AGREEMENT_METRICS and f > 0]
    return explained, lines


def run_float64(module: nn.Module, pool: torch.Tensor) -> list[np.ndarray]:
    """``module``'s outputs for ``pool`` computed in float64 (in place: float32 → float64 → float32 is exact, so
    the model is left as it was, with no copy of its weights)."""
    import torch

    tensors = {id(t): (t, t.dtype) for owner in module.modules()
               for t in (*owner._parameters.values(), *owner._buffers.values())
               if t is not None and t.is_floating_point()}.values()
    try:
        for t, _ in tensors:
            t.data = t.data.double()
        with torch.no_grad():
            return [t.detach().numpy() for t in module(pool.double())]
    finally:
        for t, dtype in tensors:
            t.data = t.data.to(dtype)


def _raw(pairs: list[tuple[list[int], list, list]], output_names: tuple[str, ...],
         tolerance: float) -> list[OutputComparison]:
    return [_compare(name, [(r[i], c[i]) for _, r, c in pairs], tolerance) for i, name in enumerate(output_names)]


def _from_row(row: dict[str, Any]) -> OutputComparison:
    """A task comparison row (diffs over matched pairs) in the table's form."""
    diffs = row["diffs"]
    worst = float(diffs.max()) if diffs.size else 0.0
    return OutputComparison(
        name=row["name"], shape=[int(diffs.size)], max_abs_diff=worst,
        mean_abs_diff=float(diffs.mean()) if diffs.size else 0.0, max_rel_diff=None,
        allowed_abs_diff=row["allowed"], reference_min=None, reference_max=None,
        passed=worst <= row["allowed"], histogram=diff_histogram(diffs), problem=None, note=row["note"])


def _run_batches(module: nn.Module, runner: Runner, input_name: str, pool: torch.Tensor,
                 batch_sizes: list[int]) -> tuple[list[tuple[list[int], list, list]], list[str]]:
    """``(pool indices, PyTorch outputs, exported outputs)`` per batch run: the file runs at every batch size,
    PyTorch once per image (``_references``)."""
    pairs, messages = [], []
    references = _references(module, pool, max(batch_sizes))
    for size in batch_sizes:
        for start in range(0, len(pool), size):
            indices = _chunk(start, size, len(pool))
            batch = pool[indices]
            reference = _stacked(references, indices) if references else _reference(module, batch)
            try:
                candidate = runner.run({input_name: batch.numpy()})
            except Exception as exc:  # noqa: BLE001 - a file that fails to run fails validation
                messages.append(f"exported file failed at batch {size}: {one_line(exc, 300)}")
                break
            clash = _shape_clash(reference, candidate, size)
            if clash:
                messages.append(clash)
                break
            pairs.append((indices, reference, [np.asarray(c, dtype=np.float32) for c in candidate]))
    return pairs, messages


def _chunk(start: int, size: int, total: int) -> list[int]:
    """Pool indices of the batch at ``start``: the last one wraps around to fill ``size``."""
    return [(start + k) % total for k in range(size)]


def _reference(module: nn.Module, batch: torch.Tensor) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.detach().float().numpy() for t in module(batch)]


def _references(module: nn.Module, pool: torch.Tensor, size: int) -> list[list[np.ndarray]] | None:
    """PyTorch's outputs image by image, run once in batches of ``size`` (the largest the file is checked at,
    so PyTorch sees no batch it would not see anyway); every batch size's reference is stacked from them, as
    the float64 referee's are. ``None`` when an output is not batch-first: then each batch runs PyTorch itself."""
    per_image: list[list[np.ndarray] | None] = [None] * len(pool)
    for start in range(0, len(pool), size):
        indices = _chunk(start, size, len(pool))
        outputs = _reference(module, pool[indices])
        if any(o.ndim == 0 or o.shape[0] != size for o in outputs):
            return None
        for k, i in enumerate(indices):
            per_image[i] = per_image[i] or [o[k] for o in outputs]
    return per_image


def _stacked(references: list[list[np.ndarray]], indices: list[int]) -> list[np.ndarray]:
    return [np.stack([references[i][j] for i in indices]) for j in range(len(references[indices[0]]))]


def _shape_clash(reference: list[np.ndarray], candidate: list[np.ndarray], size: int) -> str | None:
    if len(reference) != len(candidate):
        return f"batch {size}: exported file has {len(candidate)} outputs, PyTorch {len(reference)}"
    for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
        if tuple(r.shape) != tuple(np.shape(c)):
            return (f"batch {size}: output {i} has shape {list(np.shape(c))} in the exported file "
                    f"but {list(r.shape)} in PyTorch")
    return None


def _compare(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: float) -> OutputComparison:
    ref = np.concatenate([r.ravel() for r, _ in pairs]).astype(np.float64)
    cand = np.concatenate([c.ravel() for _, c in pairs]).astype(np.float64)
    problem = None
    if not np.isfinite(ref).all():
        problem = "PyTorch output contains NaN or Inf (check the checkpoint's weights)"
    elif not np.isfinite(cand).all():
        problem = "exported output contains NaN or Inf where PyTorch's is finite"
    finite = np.isfinite(ref) & np.isfinite(cand)
    diff = np.abs(ref - cand)[finite]
    peak = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
    allowed = tolerance * max(1.0, peak)
    max_abs = float(diff.max()) if diff.size else math.inf
    rel = diff / np.maximum(np.abs(ref[finite]), 1e-8) if diff.size else np.array([math.inf])
    degenerate = problem is None and _degenerate(ref[finite], peak)
    if degenerate:
        problem = ("reference output is constant or ~0 for every input — the model looks "
                   "untrained, so this comparison proves nothing")
    return OutputComparison(
        name=name, shape=list(pairs[-1][0].shape), max_abs_diff=max_abs,
        mean_abs_diff=float(diff.mean()) if diff.size else math.inf,
        max_rel_diff=float(rel.max()), allowed_abs_diff=allowed,
        reference_min=float(ref[finite].min()) if finite.any() else math.nan,
        reference_max=float(ref[finite].max()) if finite.any() else math.nan,
        passed=(problem is None or degenerate) and max_abs <= allowed, histogram=diff_histogram(diff),
        problem=problem, degenerate=degenerate)


def _degenerate(ref: np.ndarray, peak: float) -> bool:
    return ref.size == 0 or peak < DEGENERATE_ABS or float(np.ptp(ref)) <= DEGENERATE_ABS * max(1.0, peak)


def diff_histogram(diff: np.ndarray) -> dict[str, list[float]]:
    """Counts of |diff| in log-spaced bins (two per decade); exact zeros counted apart."""
    nonzero = diff[diff > 0]
    top = math.ceil(math.log10(nonzero.max())) if nonzero.size else -6
    edges = np.logspace(-12, max(top, -6), num=(max(top, -6) + 12) * 2 + 1)
    counts, _ = np.histogram(np.clip(nonzero, edges[0], edges[-1]), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist(),
            "exact_zero": [int(diff.size - nonzero.size)]}


def _agreement_rescues(outputs: list[OutputComparison], messages: list[str], metrics: dict[str, float],
                       floor: float | None) -> bool:
    """A reduced-precision file passes on what matters: only tolerance misses, agreement above floor."""
    agreement = next((metrics[k] for k in AGREEMENT_METRICS if k in metrics), None)
    if floor is None or messages or agreement is None:
        return False
    only_tolerance = all(o.problem is None for o in outputs)
    return only_tolerance and agreement >= floor


def _verdict(outputs: list[OutputComparison], messages: list[str], ran: bool) -> str:
    hard_failure = any(not o.passed for o in outputs)
    if messages or not ran or hard_failure:
        return "failed"
    return "inconclusive" if any(o.degenerate for o in outputs) else "passed"
