"""MkDocs hooks: the references are generated from the code at build time, so they cannot drift from it.

- ``<!-- reference:cli -->``: every verb and flag, from ``exporter.cli.build_parser``;
- ``<!-- reference:api -->``: every route, from the OpenAPI schema the app serves;
- ``<!-- reference:models -->``: tasks × formats, from the task and format registries;
- ``<!-- reference:format-list -->`` and one page per format (``formats/<name>.md``), from the format registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _importable() -> None:
    """The checkout on ``sys.path`` (MkDocs restores the path it had once a hook module is loaded)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- CLI ---------------------------------------------------------------------------------------------------------
def cli_reference() -> str:
    from exporter.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in verbs._choices_actions}
    lines = []
    for verb, sub in verbs.choices.items():
        if helps.get(verb) in (None, argparse.SUPPRESS):  # the worker's command line is internal
            continue
        lines += [f"### `{verb}`", "", _cell(helps[verb]) + ("" if not sub.description else f" {sub.description}"), "",
                  "```", sub.format_usage().replace("usage: ", "").strip(), "```", "", "| argument | meaning |",
                  "|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = ", ".join(action.option_strings) or action.dest
            meaning = action.help or ""
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                meaning += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| `{name}` | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines)


# -- HTTP API ----------------------------------------------------------------------------------------------------
def api_reference() -> str:
    from exporter.api.app import create_api

    schema = create_api().openapi()
    lines = ["| method | route | what it does |", "|---|---|---|"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            lines.append(f"| `{method.upper()}` | `/api{path}` | {_cell(operation.get('summary', ''))} |")
    lines += ["", "### Parameters and bodies", ""]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            params = [f"`{p['name']}` ({p['in']})" for p in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {})
            ref = next((c.get("schema", {}).get("$ref", "") for c in body.values()), "")
            if params or body:
                lines.append(f"- `{method.upper()} /api{path}`: " + ", ".join(
                    params + ([f"body `{ref.rsplit('/', 1)[-1] or next(iter(body))}`"] if body else [])))
    return "\n".join(lines)


# -- models and formats ------------------------------------------------------------------------------------------
def models_reference() -> str:
    from exporter.formats import format_names, get_format
    from exporter.tasks import get_task, task_label, task_names

    formats = [get_format(n, require_available=False) for n in format_names()]
    lines = ["| task | " + " | ".join(f.display_name for f in formats) + " |",
             "|---|" + "---|" * len(formats)]
    for task in task_names():
        cells = ["refused" if f.cannot_carry(task) else "✓" for f in formats]
        lines.append(f"| {task_label(task)} | " + " | ".join(cells) + " |")
    lines += ["", "What each refusal lacks is on the format's own page. Architectures each task builds:", ""]
    for task in task_names():
        names = get_task(task).architectures()
        shown = ", ".join(f"`{n}`" for n in names[:40]) + (f" … ({len(names)} in all)" if len(names) > 40 else "")
        lines.append(f"- **{task_label(task)}**: {shown}")
    return "\n".join(lines)


def format_list() -> str:
    from exporter.formats import format_names, get_format

    return "\n".join(f"- [{get_format(n, require_available=False).display_name}]({n}.md)" for n in format_names())


def format_page(name: str) -> str:
    from exporter.formats import get_format
    from exporter.tasks import task_label, task_names

    fmt = get_format(name, require_available=False)
    available, reason = fmt.is_available()
    elsewhere = fmt.runs_here()
    lines = [f"# {fmt.display_name}", "", fmt.note or "", "",
             f"- **Files**: `model{fmt.suffix}`" + (" and its companions" if fmt.suffix in (".xml", ".param") else ""),
             f"- **Here**: {'available' if available else 'unavailable — ' + reason}",
             f"- **Validated in its own runtime**: {'not on this platform — ' + elsewhere if elsewhere else 'yes'}",
             f"- **Batch**: {fmt.fixed_batch or 'dynamic (validated at 1 and 2)'}",
             f"- **Default tolerance**: {fmt.tolerance:g} at full precision"
             + "".join(f"; {v:g} with `{k}={val}`" for (k, val), v in fmt.reduced_precision.items()),
             f"- **Precisions made by export-all**: {', '.join(label for label, _ in fmt.variants)}",
             f"- **Layer diagnosis**: {'yes' if fmt.diagnosis else 'no — ' + fmt.not_diagnosable}", "",
             "## Options", "", "| option | kind | default | meaning |", "|---|---|---|---|"]
    for spec in fmt.format_options:
        lines.append(f"| `{spec.name}` | {spec.kind} | `{spec.default}` | {_cell(spec.help)} |")
    lines += ["", "Every format also takes the common options (input shape, dynamic batch, tolerance, evaluation) and "
              "the task's own ([CLI](../cli.md)).", "", "## Tasks", "", "| task | |", "|---|---|"]
    for task in task_names():
        why = fmt.cannot_carry(task)
        lines.append(f"| {task_label(task)} | {'refused: ' + _cell(why.split(': ', 1)[-1]) if why else '✓'} |")
    lines += ["", "## Run it", "", "The result view's **Run it** tab writes this for every export, with the model's "
              "own preprocessing read from its metadata; here for an ImageNet classifier at 224 px:", "", "```python",
              run_it(fmt), "```"]
    return "\n".join(lines) + "\n"


def run_it(fmt: Any) -> str:
    """The "Run it" snippet of an export of this format, for a sample classifier."""
    from exporter.record import ExportRecord
    from exporter.report import usage_snippet

    record = ExportRecord(
        id="export-00000000", project_id="project", experiment_id="experiment", checkpoint="best", format=fmt.name,
        created_at="2026-01-01T00:00:00Z", output_file=f"model{fmt.suffix}",
        model={"task": "classification", "architecture": "resnet18", "num_classes": 1000, "input_size": [3, 224, 224],
               "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
               "inputs": [{"name": "input", "shape": ["batch", 3, 224, 224]}],
               "outputs": [{"name": "logits", "shape": ["batch", 1000]}]})
    return usage_snippet(record)


# -- the hooks ---------------------------------------------------------------------------------------------------
MARKERS = {"<!-- reference:cli -->": cli_reference, "<!-- reference:api -->": api_reference,
           "<!-- reference:models -->": models_reference, "<!-- reference:format-list -->": format_list}


def on_files(files, config):  # noqa: ANN001, ANN201 - MkDocs' hook signature
    from mkdocs.structure.files import File

    _importable()
    from exporter.formats import format_names

    for name in format_names():
        files.append(File.generated(config, f"formats/{name}.md", content=format_page(name)))
    return files


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201
    _importable()
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
