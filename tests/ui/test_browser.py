"""The dashboard in a real browser (Chromium via Playwright) against ``streamlit run``."""

from __future__ import annotations

import hashlib
import json
import re
import time
import zipfile

import httpx
import numpy as np
import onnxruntime as ort

from testkit.server import running_server, wait_for
from tests.conftest import ARTIFACTS, linked_copy
from tests.ui.conftest import NEEDS_BROWSER, TIMEOUT_MS, VIEWS, choose, playwright_api, selectbox, shoot

pytestmark = NEEDS_BROWSER
SNAKE_CASE = r"^[a-z0-9]+(_[a-z0-9]+)+$"


def test_export_in_the_browser_and_download(page, base_url, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(base_url)
    page.get_by_role("heading", name="Export a checkpoint").wait_for()
    choose(page, page.get_by_test_id("stSidebar"), "Project", "Demo · shape classification")
    playwright_api.expect(selectbox(page, "Experiment")).to_have_value("resnet18 shapes (exp-resnet18-shapes)")
    page.get_by_text("last · epoch").click()
    page.get_by_text("best · epoch").click()
    clicked = time.perf_counter()
    page.locator(".st-key-export button").click()
    page.get_by_role("heading", name="Result").wait_for()
    page.get_by_text("validation passed").first.wait_for()
    (ARTIFACTS / "click-to-result.json").write_text(json.dumps(
        {"model": "demo-classification/exp-resnet18-shapes", "seconds": round(time.perf_counter() - clicked, 2)}))
    chart = page.get_by_test_id("stPlotlyChart").first
    chart.wait_for()
    page.get_by_role("heading", name="Result").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "result-view.png"))
    chart.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "result-histogram.png"))

    target = download(page, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.rand(2, 3, 64, 64).astype(np.float32)})
    assert logits.shape == (2, 3)
    sha_line = page.get_by_text("sha256").first.inner_text()
    assert hashlib.sha256(target.read_bytes()).hexdigest() in sha_line


def download(page, target):
    """Click the result's download link and save the file to ``target``."""
    with page.expect_download() as info:
        page.get_by_role("button", name=f"⬇️ Download {target.name}").click()
    info.value.save_as(target)
    return target


def test_deploy_tab_downloads_a_bundle_tries_an_image_live_and_load_tests(page, base_url, tmp_path):
    with httpx.Client(base_url=base_url, timeout=60) as client:
        body = {"project_id": "demo-detection", "experiment_id": "exp-fasterrcnn-resnet18-fpn",
                "options": {"evaluate": False}}
        record = wait_for(client, client.post("/api/export", json=body).json()["id"])
        page.goto(f"{base_url}/history?export={record['id']}")
        page.get_by_role("tab", name="Deploy").click()
        with page.expect_download() as info:
            page.get_by_role("button", name="📦 Download the bundle").click()
        info.value.save_as(tmp_path / "bundle.zip")
        names = zipfile.ZipFile(tmp_path / "bundle.zip").namelist()
        assert any(n.endswith("/server/start.sh") for n in names) and any(n.endswith("config.pbtxt") for n in names)
        page.get_by_role("button", name="▶ Start the server").click()
        page.get_by_text("Serving", exact=False).first.wait_for()
        page.get_by_role("button", name="Use the golden sample image").click()
        page.locator(f".st-key-try-result-{record['id']} img").first.wait_for()
        shoot(page, "deploy-try-it-live.png")
        page.get_by_role("button", name=re.compile("Load test")).click()
        page.locator(".st-key-serving-chart [data-testid=stPlotlyChart]").wait_for(timeout=120_000)
        shoot(page, "deploy-load-test.png")
        serving = client.get(f"/api/export/{record['id']}").json()["serving"]
        assert [level["concurrency"] for level in serving["levels"]] == [1, 4, 16]
        assert all(level["requests"] > 0 and level["errors"] == 0 for level in serving["levels"])
        page.get_by_role("button", name="■ Stop").click()
        page.get_by_role("button", name="▶ Start the server").wait_for()
        assert client.delete(f"/api/export/{record['id']}/serve").json()["stopped"] is False  # already stopped


def test_history_verifies_a_signed_download_as_a_checklist(page, base_url, tmp_path):
    with httpx.Client(base_url=base_url, timeout=60) as client:
        record = wait_for(client, client.post("/api/export", json={
            "project_id": "demo-classification", "experiment_id": "exp-resnet18-shapes",
            "options": {"evaluate": False}}).json()["id"])
        signed = client.get(f"/api/export/{record['id']}/download", params={"passport": "true"}).content
    (tmp_path / "signed.zip").write_bytes(signed)
    page.goto(f"{base_url}/history?export={record['id']}")
    page.get_by_text("🔏 signed · key").first.wait_for()
    page.get_by_text("🔏 Verify a file").click()
    page.locator(".st-key-verify-upload input[type=file]").set_input_files(str(tmp_path / "signed.zip"))
    page.get_by_role("button", name="Verify", exact=True).click()
    result = page.locator(".st-key-verify-result")
    result.get_by_text("Valid — key").wait_for()
    result.get_by_text("✅").nth(2).wait_for()  # the checklist draws its rows after the headline
    assert result.get_by_text("❌").count() == 0
    shoot(page, "history-verify.png")


def test_downloads_complete_while_another_export_runs(page, base_url, tmp_path):
    """Ten downloads in a row, each while another export of the project runs (so the page's progress
    timer fires during every download): every file is byte-identical to the record's sha256 — no
    download is cancelled by a refresh, and the result being read is not redrawn when an export it
    does not show finishes."""
    project, experiment = "demo-classification", "exp-resnet18-shapes"
    api = httpx.Client(base_url=f"{base_url}/api", timeout=30)
    page.goto(base_url)
    choose(page, page.get_by_test_id("stSidebar"), "Project", "Demo · shape classification")
    page.locator(".st-key-export button").click()
    page.wait_for_url(re.compile(r"export=export-[0-9a-f]{8}"))  # the page's own export, not an older result
    shown = re.search(r"export=(export-[0-9a-f]{8})", page.url).group(1)
    page.locator("h4").filter(has_text=shown).wait_for(timeout=TIMEOUT_MS)  # its result, once it finished
    expected = api.get(f"/export/{shown}").json()["files"][0]["sha256"]
    busy = 0
    for attempt in range(10):
        running = [e for e in api.get("/exports", params={"project_id": project}).json()
                   if e["status"] in ("pending", "running")]
        if not running:  # keep one export going in the background (the page started none of them), long enough
            # (~10 s: a warm worker starts at once) for the page's 5 s look for exports started elsewhere to see it
            api.post("/export", json={"project_id": project, "experiment_id": experiment,
                                      "options": {"input_shape": [1, 3, 896, 896]}}).raise_for_status()
        page.get_by_role("heading", name="Running").wait_for()  # the 1 s timer is on
        busy += 1
        target = download(page, tmp_path / f"try-{attempt}" / "model.onnx")
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected, f"download {attempt} differs"
        playwright_api.expect(page.locator("h4").filter(has_text=shown)).to_have_count(1, timeout=TIMEOUT_MS)
    assert busy == 10


def test_projects_jump_to_export_preselected(page, base_url):
    page.goto(f"{base_url}/projects")
    page.get_by_role("heading", name="Projects").wait_for()
    page.locator(".st-key-go-demo-detection-exp-fasterrcnn-resnet18-fpn button").click()
    page.get_by_role("heading", name="Export a checkpoint").wait_for()
    expect = playwright_api.expect
    expect(selectbox(page.get_by_test_id("stSidebar"), "Project")).to_have_value("Demo · shape detection")
    expect(selectbox(page, "Experiment")).to_have_value(
        "fasterrcnn_resnet18_fpn shapes (exp-fasterrcnn-resnet18-fpn)")
    page.get_by_text("Detections per image, at most").first.wait_for()  # the task's options, by their labels
    page.screenshot(path=str(ARTIFACTS / "export-page.png"), full_page=True)


def test_history_page_lists_and_opens_exports(page, base_url):
    page.goto(f"{base_url}/history")
    page.get_by_role("heading", name="Export history").wait_for()
    page.get_by_text("click a row to open it").first.wait_for()
    page.get_by_test_id("stDataFrame").first.wait_for()  # the table, not its loading skeleton
    playwright_api.expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "history-page.png"), full_page=True)


def test_upload_a_checkpoint_in_the_dashboard_and_export_it(page, demo_template, tmp_path):
    """Projects → Import on a server that requires an API token: the picker streams the file to
    /api/uploads (with the page's upload ticket), a broken file is refused with the reason, the
    weights' architecture is proposed, and the imported checkpoint exports from the Export page."""
    import torch
    import torchvision

    from testkit.models import lively_init

    state = lively_init(torchvision.models.resnet18(weights=None, num_classes=5)).state_dict()
    upload = tmp_path / "my_resnet18.pt"
    torch.save({"model": state}, upload)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(upload.read_bytes()[:4096])
    ws = linked_copy(demo_template, tmp_path / "ws")
    with running_server(ws, AISTUDIO_API_TOKEN="t0ken") as base:
        page.goto(f"{base}/projects")
        page.get_by_role("heading", name="Projects").wait_for()
        page.get_by_text("Import a model").click()
        page.get_by_label("New project id").fill("uploaded")
        page.get_by_label("New project id").press("Enter")
        picker = page.get_by_label("Checkpoint file")
        picker.set_input_files(str(broken))
        page.get_by_text("✓ broken.ckpt").wait_for()
        page.get_by_text("Checkpoint broken.ckpt is truncated or corrupt").wait_for()
        playwright_api.expect(page.get_by_role("button", name="Import", exact=True)).to_have_count(0)

        picker.set_input_files(str(upload))
        page.get_by_text("✓ my_resnet18.pt · 44.8 MB on the server").wait_for()
        page.get_by_text("the weights fit:").wait_for()  # the first detection builds 111 fingerprints (~9 s)
        playwright_api.expect(selectbox(page, "Architecture")).to_have_value("resnet18 (100%)")
        playwright_api.expect(page.get_by_label("Classes", exact=True)).to_have_value("5")
        page.get_by_label("Input size C,H,W").fill("3,64,64")
        page.get_by_label("Input size C,H,W").press("Enter")
        page.screenshot(path=str(ARTIFACTS / "import-form.png"), full_page=True)
        page.get_by_role("button", name="Import", exact=True).click()
        page.get_by_text("Imported exp-my_resnet18 into uploaded").first.wait_for()
        assert not list((ws / ".uploads").iterdir())  # the broken file went when replaced, this one once imported
        page.get_by_role("link", name="Export the imported checkpoint →").click()
        page.get_by_role("heading", name="Export a checkpoint").wait_for()
        playwright_api.expect(selectbox(page.get_by_test_id("stSidebar"), "Project")).to_have_value("uploaded")
        playwright_api.expect(selectbox(page, "Experiment")).to_have_value("exp-my_resnet18 (exp-my_resnet18)")
        page.locator(".st-key-export button").click()
        page.get_by_text("validation passed").first.wait_for()
        # The download link carries the page's ticket: the token never reaches the page.
        href = page.get_by_role("button", name="⬇️ Download model.onnx").get_attribute("href")
        assert "ticket=" in href and "t0ken" not in page.content()
        saved = download(page, tmp_path / "model.onnx")
        assert ort.InferenceSession(str(saved), providers=["CPUExecutionProvider"]).get_outputs()[0].name == "logits"
        forged = href.split("ticket=")[0] + "ticket=forged"
        assert httpx.get(f"{base}{forged}").status_code == 401


def test_attach_a_labelled_set_then_see_where_int8_disagrees(page, base_url, demo_full_template, tmp_path):
    """Projects → Attach streams a zip and makes it data/val; an INT8 export then evaluates on it, and
    its Evaluation tab shows the gallery: thumbnails with PyTorch's and the file's detections drawn; its
    Diagnosis tab's button finds where the file diverges from the fp32 graph and draws it."""
    val = demo_full_template / "projects" / "demo-oriented" / "data" / "val"
    archive = tmp_path / "plates-val.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(val.rglob("*")):
            zf.write(path, "plates/" + path.relative_to(val).as_posix())
    page.goto(f"{base_url}/projects")
    page.get_by_role("heading", name="Projects").wait_for()
    page.get_by_text("Attach a labelled validation set").click()
    page.get_by_text("Layout for anomaly_detection").wait_for()
    choose(page, page.get_by_test_id("stMain"), "Project", "Demo · oriented plates (demo-oriented)")
    page.get_by_text("DOTA: images/*").wait_for()  # the task's layout is said before anything is sent
    page.get_by_label("Validation set (.zip)").set_input_files(str(archive))
    page.get_by_text("✓ plates-val.zip").wait_for()
    page.get_by_role("button", name="Attach", exact=True).click()
    page.get_by_text("Attached demo-oriented/data/val: 100 images (dota)").wait_for()
    page.get_by_text("labelled set: 100 images in data/val").wait_for()

    with httpx.Client(base_url=base_url, timeout=30) as api:
        started = api.post("/api/export", json={
            "project_id": "demo-oriented", "experiment_id": "exp-obb-resnet18",
            "options": {"precision": "int8", "quantization": "static", "max_metric_drop": 0.5}}).json()
        record = wait_for(api, started["id"])
    assert record["evaluation"]["status"] == "completed" and record["evaluation"]["disagreements"], record["evaluation"]
    page.goto(f"{base_url}/?export={record['id']}")
    choose(page, page.get_by_test_id("stSidebar"), "Project", "Demo · oriented plates")
    page.get_by_role("tab", name="Evaluation").click()
    page.get_by_text("Where they disagree most").wait_for()
    thumbnails = page.get_by_test_id("stImage").locator("img")
    thumbnails.first.wait_for()
    assert thumbnails.count() == len(record["evaluation"]["disagreements"])
    assert thumbnails.first.evaluate("img => img.complete && img.naturalWidth") > 300  # two drawn halves
    thumbnails.first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "evaluation-gallery.png"))

    # Where does the INT8 file diverge? The button runs a diagnosis job; the tab then draws it.
    page.get_by_role("tab", name="Diagnosis").click()
    page.get_by_role("button", name="🔍 Where does it diverge?").click()
    page.get_by_text("int8 ONNX against the fp32 ONNX graph, tensor by tensor").wait_for(timeout=120_000)
    page.get_by_text("The layers that add the most error").wait_for()
    chart = page.locator(".stPlotlyChart").filter(has_text="Error along the graph")
    assert chart.count() == 1
    chart.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "diagnosis-tab.png"))


def pick_project(page, view: str, name: str) -> None:
    """Choose the project in the sidebar (a drawer on a phone: opened, then closed again)."""
    if view == "phone":
        page.get_by_test_id("stExpandSidebarButton").click()
    choose(page, page.get_by_test_id("stSidebar"), "Project", name)
    if view == "phone":
        page.get_by_test_id("stSidebarCollapseButton").locator("button").click()


def _no_truncation_or_page_scroll(page, where: str) -> None:
    """No summary value cut with "…" or by its box, and no horizontal scrolling of the page itself."""
    cut = page.evaluate("""() => [...document.querySelectorAll(
            '.aistudio-fact-value, [data-testid="stMetricValue"], [data-testid="stWidgetLabel"] p')]
        .filter(e => e.innerText.trim().endsWith('…') || e.scrollWidth > e.clientWidth + 1)
        .map(e => e.innerText)""")
    assert cut == [], f"{where}: truncated {cut}"
    wide = page.evaluate("""() => [document.documentElement, document.querySelector('[data-testid="stMain"]')]
        .filter(e => e && e.scrollWidth > e.clientWidth + 1).length""")
    assert wide == 0, f"{where}: the page scrolls sideways"


def _plots_do_not_overlap(page, where: str) -> None:
    """Each plot's legend and annotations stay off each other, its title and its axes' titles."""
    overlaps = page.evaluate("""() => {
        const box = e => e.getBoundingClientRect();
        const hit = (a, b) => a.width && b.width && a.left < b.right && b.left < a.right
                              && a.top < b.bottom && b.top < a.bottom;
        const found = [];
        for (const plot of document.querySelectorAll('.js-plotly-plot')) {
            const parts = [...plot.querySelectorAll('.legend, .annotation, .gtitle, .xtitle, .ytitle')];
            for (let i = 0; i < parts.length; i++) for (let j = i + 1; j < parts.length; j++)
                if (hit(box(parts[i]), box(parts[j])))
                    found.push(parts[i].getAttribute('class') + ' × ' + parts[j].getAttribute('class'));
        }
        return found; }""")
    assert overlaps == [], f"{where}: {overlaps}"


def test_every_page_reads_well_wide_and_on_a_phone_light_and_dark(browser, base_url):
    """Export (before/after), History, Compare and Projects at 1400×1000 and 390×844, light and dark:
    screenshots into test-artifacts/ and the checks a person makes looking at them."""
    ARTIFACTS.mkdir(exist_ok=True)
    with httpx.Client(base_url=f"{base_url}/api", timeout=30) as api:  # a second export, for Compare
        wait_for(httpx.Client(base_url=base_url, timeout=30), api.post("/export", json={
            "project_id": "demo-regression", "experiment_id": "exp-resnet18-center"}).json()["id"])
    for view, scheme in [(v, s) for v in VIEWS for s in ("light", "dark")]:
        context = browser.new_context(viewport=VIEWS[view], color_scheme=scheme, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        name = f"{view}-{scheme}"
        try:
            page.goto(base_url)
            pick_project(page, view, "Demo · shape centre regression")
            page.get_by_text("Precision").first.wait_for()
            # the toolbar is trimmed for users: no "Deploy" (to Streamlit's cloud) and no developer menu items
            assert page.get_by_test_id("stAppDeployButton").count() == 0
            assert page.get_by_role("button", name="Deploy").count() == 0
            labels = page.get_by_test_id("stWidgetLabel").all_inner_texts()
            assert not [t for t in labels if re.match(SNAKE_CASE, t.strip())], labels
            assert page.get_by_text("INT8 quantization").count() == 0  # nothing that does nothing at fp32
            _no_truncation_or_page_scroll(page, f"export {name}")
            shoot(page, f"export-before-{name}.png")
            if name == "wide-light":
                choose(page, page.get_by_test_id("stMain"), "Precision", "int8")
                page.get_by_text("INT8 quantization").wait_for()
                assert page.get_by_text("Calibration images").count() == 0  # only for static
                choose(page, page.get_by_test_id("stMain"), "Precision", "fp32")
                page.locator(".st-key-export button").click()
                page.get_by_role("heading", name="Running").wait_for()
                # the panel's first heading (Running, then Result) is in the window, below the top bar
                heading = page.locator(".st-key-side-panel h3").first
                playwright_api.expect(heading).to_be_in_viewport(ratio=1)
                bar = page.get_by_test_id("stHeader").bounding_box()
                assert heading.bounding_box()["y"] >= bar["y"] + bar["height"] - 1, heading.bounding_box()
                playwright_api.expect(page.get_by_role("heading", name="Running")).to_have_count(0, timeout=180_000)
            page.get_by_role("heading", name="Result").wait_for()
            page.get_by_text("validation passed").first.wait_for()
            page.get_by_test_id("stPlotlyChart").first.wait_for()
            _no_truncation_or_page_scroll(page, f"result {name}")
            _plots_do_not_overlap(page, f"result {name}")
            shoot(page, f"export-after-{name}.png")

            page.goto(f"{base_url}/history")
            grid = page.get_by_test_id("stDataFrame").first
            grid.wait_for()
            grid.scroll_into_view_if_needed()  # on a phone the filters and the Verify box push it below the fold
            page.wait_for_timeout(500)
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection box
            page.locator("h4").filter(has_text="export-").first.wait_for()
            _no_truncation_or_page_scroll(page, f"history {name}")
            shoot(page, f"history-{name}.png")
            grid.scroll_into_view_if_needed()  # the picture moved the page: find the table again
            page.wait_for_timeout(300)
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 + 17)  # and the second: compare
            page.get_by_role("heading", name="Compare").wait_for()
            shoot(page, f"compare-{name}.png")

            page.goto(f"{base_url}/compare")
            page.get_by_role("heading", name="Compare exports").wait_for()
            pick_project(page, view, "Demo · shape classification")
            page.get_by_test_id("stDataFrame").or_(page.get_by_text("No completed exports")).first.wait_for()
            page.wait_for_timeout(500)
            _no_truncation_or_page_scroll(page, f"compare page {name}")
            _plots_do_not_overlap(page, f"compare page {name}")
            shoot(page, f"compare-page-{name}.png")

            page.goto(f"{base_url}/projects")
            page.get_by_role("heading", name="Projects").wait_for()
            _no_truncation_or_page_scroll(page, f"projects {name}")
            shoot(page, f"projects-{name}.png")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"failed-tour-{name}.png"))
            raise
        finally:
            context.close()
