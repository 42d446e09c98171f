"""Browser-test hooks: remember whether a test's body failed, so its page can be photographed."""

import pytest

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
