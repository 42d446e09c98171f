"""Shared fixtures: a demo workspace built once per session, fresh workspaces per test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if WORKERS > 1:
    # pytest -n (make test): each worker, and the servers and jobs it starts, gets its share of the cores.
    # Two workers' OpenMP pools spinning on the same two cores made the suite ~40 % slower (measured).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))


DEMO_FIXTURES = {"demo_full_template", "demo_template"}


def pytest_addoption(parser):
    group = parser.getgroup("demo", "the demo workspace the model-dependent tests run against")
    group.addoption("--demo-seed", type=int, default=0,
                    help="train the demo with this seed (default 0: the demo the docs' figures come from)")
    group.addoption("--demo-threads", type=int, default=None,
                    help="train the demo on this many threads (default: every physical core)")


# Test files in the order `make test` starts them (`--dist loadfile --no-loadscope-reorder`: a free worker takes the
# next file): the first ones read no demo, so one worker runs them while the other trains it; then the longest
# first (seconds of a full run), so the short ones fill in at the end; files not listed come last.
FILE_ORDER = [
    "tests/exporter/test_families.py", "tests/ui/test_browser.py", "tests/test_import.py",
    "tests/exporter/test_tasks.py", "tests/exporter/test_onnx.py",  # no demo
    "tests/exporter/test_edge_formats.py", "tests/deploy/test_bundles.py", "tests/cluster/test_ray_runner.py",
    "tests/test_cli.py", "tests/exporter/test_own_models.py", "tests/exporter/test_snippets.py",
    "tests/exporter/test_diagnosis.py", "tests/ui/test_browser_compare.py", "tests/reliability/test_faults.py",
    "tests/exporter/test_evaluation.py", "tests/ui/test_pages.py", "tests/exporter/test_passport.py",
    "tests/api/test_api_server.py", "tests/exporter/test_formats.py",
]


def pytest_collection_modifyitems(config, items):
    # Every test that reads a trained demo model is marked `demo`: `make test-other-demo` runs them against a
    # demo trained with another seed and thread count, as another CPU would train it.
    for item in items:
        if DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.demo)
    if stale := [path for path in FILE_ORDER if not (ROOT / path).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py FILE_ORDER names files that do not exist: {stale}")
    rank = {path: i for i, path in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(FILE_ORDER)))  # stable within a file


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    # Never touch the user's ./workspace or home from tests.
    os.environ["AISTUDIO_WORKSPACE"] = str(tmp_path_factory.mktemp("default-ws"))
    os.environ.pop("AISTUDIO_API_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the test clusters' (testkit.ray_cluster.NO_AUTH), for their drivers too
    os.environ.setdefault("AISTUDIO_BENCHMARK_SECONDS", "0.2")  # a benchmark no test times by hand: 5+ runs, not 2 s
    yield


@pytest.fixture(scope="session")
def demo_full_template(tmp_path_factory, pytestconfig) -> Path:
    """The demo workspace as `make run` builds it, trained once per test session (read-only).

    ``AISTUDIO_TEST_DEMO=DIR`` reuses a demo workspace built before (``python -m exporter demo
    --workspace DIR``) to save its ~2.5 min when running a few tests; tests only ever copy it.
    """
    from demo import build_demo

    seed, threads = pytestconfig.getoption("demo_seed"), pytestconfig.getoption("demo_threads")
    prebuilt = Path(os.environ.get("AISTUDIO_TEST_DEMO", "")).expanduser()
    if os.environ.get("AISTUDIO_TEST_DEMO") and (prebuilt / "projects").is_dir():
        return prebuilt
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp("demo-template")
        build_demo(root, seed=seed, threads=threads)
        return root
    # pytest -n (make test): the first worker builds it in the run's shared folder (a demo model depends on those
    # trained before it, so they train one after another), the others wait for it. It trains on the worker's share
    # of the cores, as the worker's tests do: alone it takes 3:33 on 2 threads and 5:14 on 1, but beside the other
    # worker 9:20 on 2 threads and 5:36 on 1 — two OpenMP threads on cores the other worker also wants wait on each
    # other at every layer.
    from filelock import FileLock

    from exporter.benchmark import default_threads

    shared = tmp_path_factory.getbasetemp().parent
    root = shared / "demo-template"
    with FileLock(str(shared / "demo-template.lock")):
        if not (root / "projects").is_dir():
            building = shared / "demo-template.partial"
            shutil.rmtree(building, ignore_errors=True)
            build_demo(building, seed=seed, threads=threads or max(1, default_threads() // WORKERS))
            building.rename(root)
    return root


@pytest.fixture(scope="session")
def demo_template(demo_full_template, tmp_path_factory) -> Path:
    """The demo workspace without its labelled sets (``data/val``), so exports skip the evaluation
    stage — evaluating 100 images in two runtimes on every detector export would cost the suite
    minutes. Evaluation is tested on ``demo_eval_ws``."""
    lean = tmp_path_factory.mktemp("demo-lean") / "ws"
    shutil.copytree(demo_full_template, lean, copy_function=os.link,
                    ignore=lambda folder, names: ["val"] if Path(folder).name == "data" else [])
    return lean


def linked_copy(template: Path, target: Path) -> Path:
    """A private copy of a demo workspace at ``target`` (files hard-linked, so copying is cheap)."""
    shutil.copytree(template, target, copy_function=os.link)
    return target


@pytest.fixture
def demo_ws(demo_template, tmp_path) -> Path:
    """A private copy of the demo workspace."""
    return linked_copy(demo_template, tmp_path / "ws")


@pytest.fixture
def demo_eval_ws(demo_full_template, tmp_path) -> Path:
    """A private copy of the demo workspace with its labelled sets (exports evaluate by default)."""
    return linked_copy(demo_full_template, tmp_path / "ws")


def read_index(root: Path, project_id: str) -> list[dict]:
    """The project's exports_index.json (asserting it is valid JSON)."""
    path = Path(root) / "projects" / project_id / "exports" / "exports_index.json"
    return json.loads(path.read_text()) if path.exists() else []
