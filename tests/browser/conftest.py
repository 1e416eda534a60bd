"""Browser-test fixtures: Debian's Chromium driven by Playwright (no `playwright install`: there is
no internet). Tests skip, saying why, when the binary or the Python package is missing."""
from __future__ import annotations

import pytest

from tests.browser.support import ARGS, CHROMIUM


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium) for the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()
        # Under Playwright's loop Django's connection is a context-local one of its own: close it,
        # or it keeps the test database open at teardown.
        from django.db import connections

        connections.close_all()
