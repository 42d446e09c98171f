"""Export options declared once, parsed the same way from CLI text, JSON and widgets."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from exporter.errors import InvalidOptionError

MAX_SIDE = 4096
MAX_BATCH = 64
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type, default, allowed range, a help line, and how forms show it.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``choice``, ``shape`` (N,C,H,W), ``text`` (a name). ``label`` is
    the human name forms show (with the unit); ``advanced`` options sit under "Advanced";
    ``applies_when`` maps another option's name to the values for which this one does anything
    (``quantization`` only at ``precision=int8``), so forms hide it otherwise.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    label: str = ""
    advanced: bool = False
    applies_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    placeholder: str = "model default"  # what an empty text field means (options whose default is None)

    @property
    def title(self) -> str:
        """What a form calls the option (its label, else its name)."""
        return self.label or self.name

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the option does anything given the other options' ``values`` (absent ones count as applying)."""
        return all(name not in values or values[name] in allowed for name, allowed in self.applies_when)

    def parse(self, value: Any) -> Any:
        """Convert and check ``value`` (a CLI string or a JSON value).

        Raises:
            InvalidOptionError: the value has the wrong type or is out of range.
        """
        if value is None or (isinstance(value, str) and not value.strip() and self.kind != "choice"):
            return self.default
        parsed = getattr(self, f"_parse_{self.kind}")(value)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            self._check_range(parsed)
        return parsed

    def describe(self) -> dict[str, Any]:
        """JSON form for ``/api/formats`` and the dashboard."""
        described = {k: v for k, v in asdict(self).items() if v not in ((), None) or k == "default"}
        if self.applies_when:
            described["applies_when"] = {name: list(values) for name, values in self.applies_when}
        return described

    def _fail(self, value: Any, expected: str) -> InvalidOptionError:
        return InvalidOptionError(f"Option {self.name}={value!r} is invalid: expected {expected}.")

    def _check_range(self, value: float) -> None:
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise InvalidOptionError(f"Option {self.name}={value!r} is out of range: use a value {bounds}.")

    def _parse_int(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self._fail(value, "an integer")
        try:
            return int(str(value).strip())
        except ValueError:
            raise self._fail(value, "an integer") from None

    def _parse_float(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self._fail(value, "a number")
        try:
            number = float(str(value).strip())
        except ValueError:
            raise self._fail(value, "a number") from None
        if not math.isfinite(number):
            raise self._fail(value, "a finite number")
        return number

    def _parse_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS and not isinstance(value, (list, dict)):
            return word in TRUE_WORDS
        raise self._fail(value, "true or false")

    def _parse_choice(self, value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in self.choices:
            raise self._fail(value, f"one of {', '.join(self.choices)}")
        return value.strip().lower()

    def _parse_text(self, value: Any) -> str:
        text = str(value).strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:_.\-]{0,63}", text):
            raise self._fail(value, "a name of 1–64 letters, digits, ':', '_', '.' or '-'")
        return text

    def _parse_shape(self, value: Any) -> list[int]:
        items = value.replace("x", ",").split(",") if isinstance(value, str) else value
        try:
            dims = [_strict_int(v) for v in items]
        except (TypeError, ValueError):
            raise self._fail(value, "4 positive integers N,C,H,W such as 1,3,224,224") from None
        if len(dims) != 4 or min(dims) <= 0:
            raise self._fail(value, "4 positive integers N,C,H,W such as 1,3,224,224")
        n, c, h, w = dims
        if n > MAX_BATCH or c > 16 or h > MAX_SIDE or w > MAX_SIDE:
            raise InvalidOptionError(
                f"Option {self.name}={dims} is too large: batch ≤ {MAX_BATCH}, channels ≤ 16, "
                f"height and width ≤ {MAX_SIDE}.")
        return dims


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(value)
    return int(value)


COMMON_OPTIONS = (
    OptionSpec("input_shape", "shape", None,
               "Example input N,C,H,W; default: batch 1 at the checkpoint's input_size.",
               label="Input shape (N, C, H, W)"),
    OptionSpec("dynamic_batch", "bool", True,
               "Declare the batch axis dynamic (validated at batch 1 and 2).", label="Dynamic batch size",
               advanced=True),
    OptionSpec("tolerance", "float", None,
               "Allowed |PyTorch - exported| per output, relative to max(1, max |output|); "
               "default follows the precision (fp32 1e-4, fp16 1e-2, int8 5e-2).",
               minimum=1e-9, maximum=10.0, label="Validation tolerance (relative |diff|)", advanced=True),
    OptionSpec("evaluate", "bool", True,
               "Evaluate on the project's labelled set (data/val) when it has one: PyTorch vs the file.",
               label="Evaluate on data/val"),
    OptionSpec("max_images", "int", 500, "Evaluation: labelled images used at most (bounds the time).",
               minimum=1, maximum=100_000, label="Labelled images, at most", advanced=True,
               applies_when=(("evaluate", (True,)),)),
    OptionSpec("max_metric_drop", "float", 0.01,
               "Evaluation gate: largest allowed drop of the primary metric (absolute; for lower-is-better "
               "metrics such as MAE, the largest allowed increase); a negative value requires a gain.",
               minimum=-1e6, maximum=1e6,
               label="Allowed metric drop (absolute)", applies_when=(("evaluate", (True,)),)),
)


def parse_options(specs: Iterable[OptionSpec], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse ``raw`` against ``specs``; every spec gets a value (its default if absent).

    Raises:
        InvalidOptionError: a key is unknown (the message lists the valid ones) or a value is bad.
    """
    by_name = {spec.name: spec for spec in specs}
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise InvalidOptionError(
            f"Unknown option {', '.join(map(repr, unknown))}; valid options: {', '.join(sorted(by_name))}.")
    return {name: spec.parse(raw.get(name)) for name, spec in by_name.items()}


def parse_key_values(pairs: Iterable[str]) -> dict[str, str]:
    """``["precision=fp16", ...]`` from the CLI's ``--option`` into a dict of strings."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidOptionError(f"--option {pair!r} must look like KEY=VALUE.")
        result[key.strip()] = value.strip()
    return result
