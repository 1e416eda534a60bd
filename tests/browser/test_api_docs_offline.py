"""The API docs page renders in Chromium with every request to another host refused (offline)."""
from __future__ import annotations

from urllib.parse import urlparse

from tests.browser.support import SHOTS


def test_swagger_ui_renders_without_any_other_host(live_server_url, chromium):
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    own = urlparse(live_server_url).netloc
    elsewhere: list[str] = []

    def only_this_server(route):
        if urlparse(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{live_server_url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "GFT Studio API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag-section", timeout=10_000)  # the operations, from /api/schema/
    assert "/api/runs/{id}/cancel/" in page.inner_text(".swagger-ui")
    page.screenshot(path=str(SHOTS / "api-docs.png"))
    assert elsewhere == []
