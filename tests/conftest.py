"""Shared fixtures: a demo workspace built once per session, fresh workspaces per test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    # Never touch the user's ./workspace or home from tests.
    os.environ["AISTUDIO_WORKSPACE"] = str(tmp_path_factory.mktemp("default-ws"))
    os.environ.pop("AISTUDIO_API_TOKEN", None)
    yield


DEMO_FIXTURES = {"demo_full_template", "demo_template", "demo_ws", "demo_eval_ws"}
_BUILD: dict[str, object] = {}  # the demo build started at collection: {"root", "process", "log"}


def pytest_collection_modifyitems(session, config, items):
    """Modules that need the demo workspace run after those that do not, and the demo (~4 min of training)
    starts building in a background process now, so the demo-free modules run while it trains."""
    needs: dict[str, bool] = {}
    for item in items:
        needs[item.nodeid.split("::")[0]] = needs.get(item.nodeid.split("::")[0], False) or bool(
            DEMO_FIXTURES & set(getattr(item, "fixturenames", ())))
    items.sort(key=lambda item: needs[item.nodeid.split("::")[0]])  # stable: file order kept within each group
    if any(needs.values()) and not _prebuilt() and not config.option.collectonly:
        import subprocess
        import sys
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="aistudio-test-demo-"))
        log = open(root / "build.log", "wb")  # noqa: SIM115 - closed at session end
        process = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--workspace", str(root / "ws")],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        _BUILD.update(root=root, process=process, log=log)


def pytest_sessionfinish(session, exitstatus):
    """Stop the background demo build if the session ends first; remove what it wrote."""
    if not _BUILD:
        return
    if _BUILD["process"].poll() is None:
        _BUILD["process"].kill()
        _BUILD["process"].wait()
    _BUILD["log"].close()
    shutil.rmtree(_BUILD["root"], ignore_errors=True)


def _prebuilt() -> Path | None:
    prebuilt = Path(os.environ.get("AISTUDIO_TEST_DEMO", "")).expanduser()
    return prebuilt if os.environ.get("AISTUDIO_TEST_DEMO") and (prebuilt / "projects").is_dir() else None


@pytest.fixture(scope="session")
def demo_full_template(tmp_path_factory) -> Path:
    """The demo workspace as `make run` builds it, trained once per test session (read-only).

    Built by ``python -m exporter demo`` in a background process started at collection time (see
    ``pytest_collection_modifyitems``). ``AISTUDIO_TEST_DEMO=DIR`` reuses a demo workspace built
    before (``python -m exporter demo --workspace DIR``) to save its ~4 min when running a few
    tests; tests only ever copy it.
    """
    if prebuilt := _prebuilt():
        return prebuilt
    if not _BUILD:  # collected without the hook's build (e.g. an unusual plugin order): build here
        from demo import build_demo

        root = tmp_path_factory.mktemp("demo-template")
        build_demo(root)
        return root
    if _BUILD["process"].wait() != 0:
        raise RuntimeError("building the demo workspace failed:\n"
                           + (_BUILD["root"] / "build.log").read_text(errors="replace")[-3000:])
    return _BUILD["root"] / "ws"


@pytest.fixture(scope="session")
def demo_template(demo_full_template, tmp_path_factory) -> Path:
    """The demo workspace without its labelled sets (``data/val``), so exports skip the evaluation
    stage — evaluating 100 images in two runtimes on every detector export would cost the suite
    minutes. Evaluation is tested on ``demo_eval_ws``."""
    lean = tmp_path_factory.mktemp("demo-lean") / "ws"
    shutil.copytree(demo_full_template, lean, copy_function=os.link,
                    ignore=lambda folder, names: ["val"] if Path(folder).name == "data" else [])
    return lean


@pytest.fixture
def demo_ws(demo_template, tmp_path) -> Path:
    """A private copy of the demo workspace (checkpoints hard-linked, so copying is cheap)."""
    target = tmp_path / "ws"
    shutil.copytree(demo_template, target, copy_function=os.link)
    return target


@pytest.fixture
def demo_eval_ws(demo_full_template, tmp_path) -> Path:
    """A private copy of the demo workspace with its labelled sets (exports evaluate by default)."""
    target = tmp_path / "ws"
    shutil.copytree(demo_full_template, target, copy_function=os.link)
    return target


def read_index(root: Path, project_id: str) -> list[dict]:
    """The project's exports_index.json (asserting it is valid JSON)."""
    path = Path(root) / "projects" / project_id / "exports" / "exports_index.json"
    return json.loads(path.read_text()) if path.exists() else []
