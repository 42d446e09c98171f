"""Browser-test hooks and fixtures: Chromium (Debian's, driven by Playwright), a page per test photographed when
the test fails, and the Streamlit widgets' locators."""

import shutil

import pytest

from testkit.server import running_server
from tests.conftest import ARTIFACTS, linked_copy

try:
    from playwright import sync_api as playwright_api
except ImportError:  # pragma: no cover - in requirements-dev.txt
    playwright_api = None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEEDS_BROWSER = pytest.mark.skipif(CHROMIUM is None or playwright_api is None,
                                   reason="Chromium is not installed (apt-get install chromium)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
TIMEOUT_MS = 60_000
VIEWS = {"wide": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    if request.node.stash.get(FAILED, False):  # what the page showed when the test failed
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
    context.close()


def selectbox(scope, label: str):
    """The input of the Streamlit selectbox labelled ``label`` (its value is the shown choice)."""
    return scope.locator(f'input[aria-label="{label}"]')


def choose(page, scope, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label`` (the first click on a page that has
    just drawn itself can leave the list closed: then click again)."""
    for attempt in range(3):
        selectbox(scope, label).click()
        try:
            page.get_by_role("option", name=option).click(timeout=5000 if attempt < 2 else TIMEOUT_MS)
            break
        except playwright_api.TimeoutError:
            page.keyboard.press("Escape")
    playwright_api.expect(selectbox(scope, label)).to_have_value(option)

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


# The documentation's pictures are the browser tests' screenshots (test-artifacts/ name → docs/img/ name): every run
# that takes one refreshes the picture, so the docs never show a page as it no longer is.
DOC_PICTURES = {"export-after-wide-light.png": "export-result.png", "compare-page.png": "compare.png",
                "history-wide-light.png": "history.png", "projects-wide-light.png": "projects.png",
                "evaluation-gallery.png": "evaluation-gallery.png", "diagnosis-tab.png": "diagnosis-tab.png",
                "benchmark-tab.png": "benchmark-tab.png", "deploy-try-it-live.png": "deploy-try-it-live.png",
                "deploy-load-test.png": "deploy-load-test.png", "history-verify.png": "history-verify.png"}


@pytest.fixture(scope="session", autouse=True)
def _pictures_for_the_docs():
    import shutil

    from tests.conftest import ARTIFACTS, ROOT

    yield
    for shot, picture in DOC_PICTURES.items():
        if (ARTIFACTS / shot).is_file():
            shutil.copyfile(ARTIFACTS / shot, ROOT / "docs" / "img" / picture)


@pytest.fixture(scope="module")
def browser_ws(demo_template, tmp_path_factory):
    return linked_copy(demo_template, tmp_path_factory.mktemp("browser") / "ws")


@pytest.fixture(scope="module")
def base_url(browser_ws):
    with running_server(browser_ws, AISTUDIO_BENCHMARK_SECONDS="0.1",  # quick default benchmarks and load tests
                        AISTUDIO_LOAD_TEST_SECONDS="0.5") as base:
        yield base



def shoot(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main area, so the window is made
    as tall as that content for the picture, then put back."""
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 8000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / name))
    page.set_viewport_size(size)
