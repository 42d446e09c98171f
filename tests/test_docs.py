"""The documentation site builds with --strict (a broken link or a missing page fails), and its references cover
every CLI verb and every API route — they are generated from the parser and the OpenAPI schema."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_cli_verb_is_in_the_reference(site):
    from exporter.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    public = {c.dest for c in verbs._choices_actions if c.help != argparse.SUPPRESS}
    page = (site / "cli" / "index.html").read_text()
    assert public and not [verb for verb in public if f"<code>{verb}</code>" not in page]
    assert "<code>worker</code>" not in page  # the worker's command line is internal


def test_every_api_route_is_in_the_reference(site):
    from exporter.api.app import create_api

    page = (site / "api" / "index.html").read_text()
    routes = [f"/api{path}" for path in create_api().openapi()["paths"]]
    assert len(routes) >= 12 and not [r for r in routes if f"<code>{r}</code>" not in page]


def test_every_format_has_its_page_and_the_readme_is_a_front_door(site):
    from exporter.formats import format_names

    assert all((site / "formats" / name / "index.html").is_file() for name in format_names())
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 120 and "```bash" in readme[:12]
    first = readme.index("```bash")
    assert readme[first + 1].startswith("make run") and readme[first + 2].startswith("make test")
