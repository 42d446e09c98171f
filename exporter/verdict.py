"""One verdict per export, and the one rule that gives it (``RULE``, shown by docs/validation.md, ``--help`` and the
result view).

- **Full precision**: the file must compute what PyTorch computes — tensor validation decides. When the project has
  a labelled set the evaluation gate (``max_metric_drop``) must pass as well.
- **Reduced precision** (fp16, bf16, int8): the file is by design not the same function. With a labelled set the
  metric gate decides and the tensor figures are evidence ("96.1 % of detections matched — expected at int8");
  without one, task agreement ≥ 99 % on the samples decides, for every task, detection included.
- A file that does not run, answers in other shapes, or answers NaN fails whatever its precision.

``decide`` reads only the record (``ExportRecord``; this module imports no record type, the record asks it), so the
verdict is the same wherever it is shown (badge, History, Compare,
export-all, the CLI's exit code, the API) and changes when a later evaluation adds evidence; the store writes it
into the record (``outcome``) and the index entry on every write.
"""

from __future__ import annotations

from typing import Any

RULE = ("One verdict per export. Full precision: the file must compute what PyTorch computes (tensor validation "
        "decides; with a labelled set its metric gate must pass too). Reduced precision (fp16, bf16, int8): with a "
        "labelled set the metric gate (max_metric_drop) decides and the tensor figures are evidence; without one, "
        "task agreement ≥ 99 % on the samples decides. A file that fails to run or answers NaN fails either way.")
MIN_RESOLVED = 1e-6  # a metric change below this is float noise: shown as "unchanged"


def reduced_precision(record: Any) -> bool:
    """Whether the file computes at reduced precision by design (its format's ``reduced_precision`` options)."""
    from exporter.formats import get_format

    try:
        return get_format(record.format, require_available=False).min_agreement(record.options) is not None
    except Exception:  # noqa: BLE001 - a record of a format this build does not know: judged as full precision
        return False


def decide(record: Any) -> dict[str, Any]:
    """The export's one verdict, the gate that decided it and why, in words (the fields of ``record.Outcome``)."""
    if record.status != "completed":
        reason = record.error.message if record.error else f"the export is {record.status}"
        return dict(verdict=record.status, gate=None, reason=reason)
    validation, evaluation = record.validation, record.evaluation
    if validation is None:
        return dict(verdict="unvalidated", gate=None, reason="the file was not validated")
    scored = evaluation is not None and evaluation.status == "completed" and evaluation.verdict in ("passed", "failed")
    if validation.verdict == "unverified":
        return dict(verdict="unverified", gate="validation", reason=_validation_reason(record), tab="Validation")
    if evaluation is not None and evaluation.error is not None and evaluation.error.type == "NonFiniteOutputError":
        return dict(verdict="failed", gate="evaluation", reason=evaluation.error.message, tab="Evaluation",
                    evidence=f"validation {validation.verdict} on the samples")
    if reduced_precision(record) and scored and not _broken(record):
        return dict(verdict=evaluation.verdict, gate="evaluation", reason=_evaluation_reason(record),
                       evidence=agreement_evidence(record), tab="Evaluation")
    if validation.verdict != "passed":
        return dict(verdict=validation.verdict, gate="validation", reason=_validation_reason(record),
                       tab="Validation")
    if scored and evaluation.verdict == "failed":
        return dict(verdict="failed", gate="evaluation", reason=_evaluation_reason(record), tab="Evaluation",
                       evidence="validation passed")
    gate = "validation and evaluation" if scored else "validation"
    return dict(verdict="passed", gate=gate, reason=_validation_reason(record)
                   + (f"; {_evaluation_reason(record)}" if scored else ""), tab="Validation")


def _broken(record: Any) -> bool:
    """The file failed to run, clashed in shape or answered NaN/Inf: no precision excuses that."""
    validation = record.validation
    return validation.broken or any(
        o.problem and not o.degenerate for o in validation.outputs)


def _evaluation_reason(record: Any) -> str:
    from exporter.tasks import metric_label

    e = record.evaluation
    metric = metric_label(record.model.task, str(e.primary_metric))
    images = e.dataset.get("images")
    change = change_text(e.delta.get(e.primary_metric) if e.primary_metric else None)
    on = f"on your labelled set ({images} images)" if images else "on your labelled set"
    return f"{metric} {change} {on}, allowed drop {e.max_metric_drop:g}"


def change_text(delta: float | None, digits: int = 4) -> str:
    """A metric's change (file − PyTorch) in words: "unchanged" below what the metric resolves, "—" without one."""
    if delta is None:
        return "—"
    if not resolved(delta):
        return "unchanged"
    return f"{delta:+.{digits}f}"


def resolved(delta: float) -> bool:
    """Whether a metric change is more than float noise (|Δ| ≥ 1e-6: an image AUROC off by 6e-8 is unchanged)."""
    return abs(delta) >= MIN_RESOLVED


def agreement_evidence(record: Any) -> str | None:
    """The tensor validation's agreement in words, as evidence beside a metric gate."""
    from exporter.tasks import metric_label
    from exporter.validation import AGREEMENT_METRICS

    metrics = record.validation.task_metrics
    key = next((k for k in AGREEMENT_METRICS if k in metrics), None)
    if key is None:
        return f"validation {record.validation.verdict}, max |diff| {record.validation.max_diff:.3g}"
    name = metric_label(record.model.task, key)
    precision = record.options.get("precision") or record.options.get("quantize") or "reduced precision"
    return f"{metrics[key]:.1%} {name} on the samples — expected at {precision}"


def _validation_reason(record: Any) -> str:
    v = record.validation
    if v.verdict == "unverified":
        return v.messages[0] if v.messages else "not run here"
    if v.verdict == "passed":
        return (f"max |diff| {v.max_diff:.2e} at batch sizes {v.batch_sizes}" if v.max_diff is not None
                else "validation passed")
    bad = [f"{o.name}: {o.problem or f'max diff {o.max_abs_diff:.2e} > allowed {o.allowed_abs_diff:.2e}'}"
           for o in v.outputs if not o.passed or o.problem]
    referee = [f"float64 referee: {v.referee}"] if v.referee else []
    return f"validation {v.verdict}: " + "; ".join(bad + v.messages + referee)
