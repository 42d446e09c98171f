"""The engine's shape, read from the source: no import cycles, short functions, no UI in the engine; job flags,
format names and task names each in their one home; the Layout (docs/contributing.md) matches the tree."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "exporter"
FRONT_ENDS = ("ui", "app_pages", "bench", "testkit")  # checked like the engine: no cycles, short functions
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports anywhere (function-level imports included)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..y import z
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph(folders: tuple[str, ...] = ("exporter",)) -> dict[str, set[str]]:
    files = {module_name(p): p for folder in folders for p in (ROOT / folder).rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: that is an edge too, but not
        # one a module can avoid, so only the modules named in import statements count.
        graph[name] = imports_of(path, known) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_engine():
    """Function-level imports count: a cycle hidden in a function is still a cycle."""
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_no_import_cycle_in_the_front_ends_and_bench():
    cycle = find_cycle(import_graph(("exporter", *FRONT_ENDS)))
    assert cycle is None, " → ".join(cycle)


def test_no_function_over_60_lines():
    long = []
    for folder in ("exporter", *FRONT_ENDS):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_engine_never_imports_streamlit():
    graph_names = {alias for p in PACKAGE.rglob("*.py") for alias in imports_of(p, {"streamlit"})}
    assert not graph_names


def string_constants(path: Path) -> set[str]:
    """Every string literal in a module (docstrings included: a name in prose is fine there, so callers skip them)."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs}


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_job_flags_live_in_the_jobs_package():
    """A job travels to its worker as a typed ``Job``; only ``exporter/jobs/kinds.py`` writes its command line."""
    from exporter.jobs.kinds import ENTRY_OPTION, JOB_OPTION

    flags = {JOB_OPTION, ENTRY_OPTION, "--evaluate", "--diagnose", "--benchmark"}
    home = PACKAGE / "jobs"
    found = {str(p.relative_to(ROOT)): sorted(flags & string_constants(p))
             for p in python_files("exporter", *FRONT_ENDS, "tests") if home not in p.parents and p != Path(__file__)}
    assert not {k: v for k, v in found.items() if v}


def test_format_names_live_in_the_formats_package():
    """Callers ask a format what it is (``needs_gpu``, ``diagnosis``, ``cannot``), never which one it is."""
    from exporter.formats import format_names

    names, home = set(format_names()), PACKAGE / "formats"
    found = {str(p.relative_to(ROOT)): sorted(names & string_constants(p))
             for p in python_files("exporter", "ui", "app_pages") if home not in p.parents}
    assert not {k: v for k, v in found.items() if v}


def test_no_task_name_in_the_formats_package():
    """Formats refuse capabilities (``exporter.capabilities``), not tasks."""
    from exporter.tasks import task_names

    names = set(task_names())
    found = {str(p.relative_to(ROOT)): sorted(names & string_constants(p)) for p in python_files("exporter/formats")}
    assert not {k: v for k, v in found.items() if v}


def test_bench_imports_nothing_from_tests():
    """What the tests and the benchmarks share lives in ``testkit``."""
    found = {str(p.relative_to(ROOT)): sorted(imports_of(p, {"tests"}) | {
        n for n in imports_of(p, {m for m in map(module_name, python_files("tests"))})})
        for p in python_files("bench", "testkit")}
    assert not {k: v for k, v in found.items() if v}


def test_front_ends_read_through_the_query_facade():
    """Pages never construct a store or read an index entry as a dict: ``exporter.queries`` gives typed results."""
    found = {str(p.relative_to(ROOT)): sorted(imports_of(p, {"exporter.store"}))
             for p in python_files("app_pages", "ui")}
    assert not {k: v for k, v in found.items() if v}


def test_a_job_changes_only_the_parts_it_may():
    from exporter.record import ExportRecord, RecordChanges

    fixed = {"schema_version", "id", "project_id", "experiment_id", "checkpoint", "format", "options", "created_at",
             "outcome"}  # the request, and the verdict the store derives
    assert set(RecordChanges.__annotations__) == ExportRecord.fields() - fixed


def layout_paths() -> set[str]:
    """The paths the Layout table (docs/contributing.md) names in its first column."""
    import re

    page = (ROOT / "docs" / "contributing.md").read_text()
    table = page[page.index("## Layout"):].split("\n\n| path |", 1)[1].split("\n\n", 1)[0]
    return {path for row in table.splitlines()[2:] for path in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def test_the_layout_matches_the_tree():
    """Every module of the engine and the UI is named (a file, or its package folder); every named path exists."""
    named = layout_paths()
    assert not [p for p in named if not (ROOT / p).exists()], "named in the Layout but not in the tree"
    folders = {p for p in named if p.endswith("/")}
    assert "exporter/" not in folders and "ui/" not in folders  # their modules are named one by one
    modules = [str(p.relative_to(ROOT)) for p in python_files("exporter", "ui") if p.name != "__init__.py"
               or p.parent == PACKAGE]
    missing = [m for m in modules if m not in named and not any(m.startswith(folder) for folder in folders)]
    assert not missing, f"modules the Layout (docs/contributing.md) does not name: {missing}"
    tops = {p.name + ("/" if p.is_dir() else "") for p in ROOT.iterdir() if not p.name.startswith(".")
            and (p.suffix == ".py" or (p.is_dir() and any(p.rglob("*.py")) and p.name != "workspace"))}
    assert tops <= {p.split("/")[0] + ("/" if "/" in p else "") for p in named}, tops
