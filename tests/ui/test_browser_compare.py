"""The Compare page in a real browser: export several formats at once, then choose one on the chart (its own
module, and server, so the two pytest workers can run it beside the other browser tests)."""

from __future__ import annotations

import re
import shutil
import time

import httpx

from tests.ui.conftest import NEEDS_BROWSER, VIEWS, choose, playwright_api, shoot

pytestmark = NEEDS_BROWSER


def test_export_all_then_choose_on_the_compare_chart(page, base_url, browser_ws, demo_full_template, tmp_path):
    """Compare → the chosen formats → one export per format × precision, each validated, evaluated on the
    labelled set and benchmarked where it runs (Core ML: unverified, not benchmarked on Linux); the chart
    places them (Pareto front, PyTorch eager);
    clicking a bubble opens that export, whose Benchmark tab shows the latency boxes, and a benchmark
    started there from the dashboard completes."""
    from exporter.dataset_attach import attach_dataset
    from exporter.formats import get_available_formats, get_format
    from exporter.workspace import Workspace

    labelled = tmp_path / "val"  # 7 images per class (3 classes) of the demo's set: a verdict needs ≥ 20
    for folder in sorted((demo_full_template / "projects/demo-classification/data/val").iterdir()):
        (labelled / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:7]:
            shutil.copy(image, labelled / folder.name / image.name)
    attach_dataset(Workspace(browser_ws), "demo-classification", labelled)
    chosen = {"torchscript": "TorchScript", "ncnn": "ncnn", "coreml": "Core ML"}  # 5 exports, 3 benchmarked
    assert {r["name"] for r in get_available_formats("classification") if r["available"]} >= set(chosen)
    made = sum(len(get_format(name).variants) for name in chosen)
    expected = sum(len(get_format(name).variants) for name in chosen if not get_format(name).runs_here())
    page.goto(f"{base_url}/compare")
    choose(page, page.get_by_test_id("stSidebar"), "Project", "Demo · shape classification")
    formats = page.get_by_test_id("stMultiSelect").filter(has_text="Formats")
    for label in chosen.values():
        formats.locator("input").click()
        page.get_by_role("option", name=label, exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Export the chosen formats").click()
    page.get_by_text(f"Started {made} exports").wait_for()
    jobs = page.locator(".st-key-export-all-jobs")  # export all's live list: format · precision · state · benchmark
    jobs.wait_for()
    assert "still running" in page.get_by_test_id("stAlert").filter(has_text="still running").first.inner_text()
    shoot(page, "compare-export-all-running.png")
    deadline, done = time.monotonic() + 600, []
    while time.monotonic() < deadline and len(done) < expected:
        time.sleep(2)
        listed = [e for e in httpx.get(f"{base_url}/api/exports?project_id=demo-classification").json()
                  if e.get("benchmark")]
        done = [e for e in listed if e["status"] == "completed" and e["benchmark"]["status"] == "completed"]
        assert not [e for e in listed if e["status"] in ("failed", "cancelled")], listed
    assert len(done) == expected, listed
    assert {e["evaluation"]["status"] for e in done} == {"completed"}
    chart = page.get_by_test_id("stPlotlyChart").first
    bubbles = chart.locator(".scatterlayer .trace .point")  # a bubble per export, PyTorch's star, the front's rings
    deadline = time.monotonic() + 60  # the page redraws as the last benchmarks end
    while bubbles.count() < expected + 2 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert bubbles.count() >= expected + 2, bubbles.count()
    assert chart.locator(".legendtext").filter(has_text="Pareto front").count() == 1
    assert chart.locator(".legendtext").filter(has_text="PyTorch eager").count() == 1
    page.get_by_text("Fastest within a 0.01").wait_for()
    shoot(page, "compare-page.png")
    ticks = chart.locator(".ytick text").all_text_contents()  # a metric change, never float noise as "60n"
    assert ticks and not [t for t in ticks if re.search(r"\d[numµkM]$", t)], ticks
    table = page.get_by_test_id("stDataFrame").last
    table.scroll_into_view_if_needed()
    cells = table.locator("td, [role='gridcell']").all_text_contents()  # the grid's accessible cells
    assert cells and "None" not in cells and "none" not in cells, cells
    size = page.viewport_size
    page.set_viewport_size(VIEWS["phone"])
    shoot(page, "compare-page-phone.png")
    page.set_viewport_size(size)
    heading = page.get_by_role("heading", name="Export a checkpoint")
    for _ in range(3):  # a click that lands while the chart redraws selects nothing: click it again, as a user would
        point = _clear_bubble(chart, expected)
        page.mouse.click(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        try:
            heading.wait_for(timeout=20_000)
            break
        except playwright_api.TimeoutError:
            continue
    heading.wait_for()
    opened = re.search(r"export=(export-[0-9a-f]{8})", page.url).group(1)
    assert opened in {e["id"] for e in done}
    page.locator("h4").filter(has_text=opened).wait_for()
    page.get_by_role("tab", name="Benchmark").click()
    page.get_by_text("vs PyTorch eager · batch 1").wait_for()
    page.get_by_text("Runtime as deployed:").wait_for()
    page.get_by_role("button", name="⏱ Benchmark on this machine").click()
    page.get_by_text("Earlier benchmarks (1)").wait_for(timeout=120_000)  # the new run is shown, the first kept
    boxes = page.locator(".js-plotly-plot .boxlayer .trace")
    assert boxes.count() == 2  # the file and PyTorch eager
    shoot(page, "benchmark-tab.png")


def _clear_bubble(chart, exports: int) -> dict:
    """The bounding box of the export bubble farthest from PyTorch's star: a file about as fast as eager with no
    change sits under the star, where a click is ambiguous (the star opens nothing)."""
    traces = chart.locator(".scatterlayer .trace")
    star = traces.last.locator(".point").first.bounding_box()
    bubbles = [p.bounding_box() for p in chart.locator(".scatterlayer .trace .point").all()[:exports]]

    def away(box: dict) -> float:
        return (box["x"] + box["width"] / 2 - star["x"] - star["width"] / 2) ** 2 + \
            (box["y"] + box["height"] / 2 - star["y"] - star["height"] / 2) ** 2
    return max(bubbles, key=away)
