"""A model family through the dashboard: a zipped transformers ``save_pretrained`` folder dropped on the Projects
page's picker is read for what it is (task, architecture, classes, input size from its files), imported, and exports
from the Export page with validation passed."""

from __future__ import annotations

import pytest

from testkit.server import running_server
from tests.conftest import ARTIFACTS
from tests.exporter.test_families import SIZE, zipped
from tests.exporter.test_families import saved as saved  # noqa: PLC0414 - the module's fixture, reused here
from tests.ui.conftest import NEEDS_BROWSER, playwright_api, selectbox

pytestmark = NEEDS_BROWSER


@pytest.mark.usefixtures("browser")
def test_a_transformers_zip_imports_on_the_projects_page_and_exports(page, saved, tmp_path):
    archive = zipped(saved / "segformer", tmp_path / "segformer.zip")
    ws = tmp_path / "ws"
    (ws / "projects").mkdir(parents=True)
    with running_server(ws) as base:
        page.goto(f"{base}/projects")
        page.get_by_role("heading", name="Welcome to AI Studio Export").wait_for()  # an empty workspace …
        page.get_by_label("New project id").fill("segformer")  # … opens with the import form
        page.get_by_label("New project id").press("Enter")
        page.get_by_label("Checkpoint file").set_input_files(str(archive))
        page.get_by_text("architecture hf/SegformerForSemanticSegmentation").wait_for()  # what config.json says
        playwright_api.expect(page.get_by_label("Input size C,H,W")).to_have_value(f"3,{SIZE},{SIZE}")
        playwright_api.expect(page.get_by_label("Classes", exact=True)).to_have_value("3")
        page.screenshot(path=str(ARTIFACTS / "import-transformers.png"), full_page=True)
        page.get_by_role("button", name="Import", exact=True).click()
        page.get_by_text("Imported exp-segformer into segformer").first.wait_for()
        page.get_by_role("link", name="Export the imported checkpoint →").click()
        page.get_by_role("heading", name="Export a checkpoint").wait_for()
        playwright_api.expect(selectbox(page.get_by_test_id("stSidebar"), "Project")).to_have_value("segformer")
        page.locator(".st-key-export button").click()
        page.get_by_text("validation passed").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "export-transformers.png"), full_page=True)
