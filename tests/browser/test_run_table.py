"""The run table in a real headless Chromium, served by uvicorn: a chosen config column, sort by a
header click, the filter kept in the URL, and a row's status following the run's live stream
(transitions made here with webapp.runs.services.transition, published to the real Redis)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from tests.browser.support import SHOTS, login, make_run
from webapp.runs.models import Run
from webapp.runs.services import transition


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#run-table tbody tr td:nth-child(3) a", "els => els.map(e => e.textContent)")


def test_run_table_columns_sort_filter_and_live_status(live_server_url, chromium, team, user):
    base = live_server_url
    small = make_run(team, user, "small-lr", 0.3, status=Run.Status.SUCCEEDED)
    big = make_run(team, user, "big-lr", 0.5, status=Run.Status.SUCCEEDED)
    Run.objects.filter(pk=big.pk).update(config={**big.config, "lr": 3e-5})
    waiting = make_run(team, user, "waiting", 0.7, status=Run.Status.QUEUED)
    make_run(team, user, "other-method", 0.7, status=Run.Status.FAILED)
    Run.objects.filter(name="other-method").update(method="grpo")

    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/?method=gft")
    # A config column, chosen in the picker: it joins the URL.
    page.fill("#add-column", "config:lr")
    page.click("#add-column-button")
    page.wait_for_function("() => new URL(location.href).searchParams.get('cols').includes('config:lr')", timeout=20_000)
    assert page.locator("#run-table thead a.sort-link[data-sort='config:lr']").count() == 1
    assert "other-method" not in _names(page)
    row = page.locator(f"tr[data-run='{big.pk}'] td.num").all_inner_texts()
    assert "3e-05" in row

    # Sort: a header click, descending first, again ascending; the filter stays in the URL.
    page.click("#run-table thead a.sort-link[data-sort='config:lr']")
    page.wait_for_function("() => new URL(location.href).searchParams.get('sort') === 'config:lr'", timeout=20_000)
    assert _names(page)[0] == "big-lr"
    page.click("#run-table thead a.sort-link[data-sort='config:lr']")
    page.wait_for_function("() => new URL(location.href).searchParams.get('dir') === 'asc'", timeout=20_000)
    names = _names(page)
    assert names.index("small-lr") < names.index("big-lr")
    query = parse_qs(urlparse(page.url).query)
    assert query["method"] == ["gft"] and "config:lr" in query["cols"][0]

    # Live: the queued run's status cell follows its transitions without a reload.
    page.wait_for_selector("#live-note.live-sse", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    cell = f"tr[data-run='{waiting.pk}'] .status"
    transition(waiting.pk, Run.Status.RUNNING)
    page.wait_for_selector(f"{cell}.status-running", timeout=20_000)
    transition(waiting.pk, Run.Status.SUCCEEDED)
    page.wait_for_selector(f"{cell}.status-succeeded", timeout=20_000)
    page.wait_for_timeout(500)
    assert page.locator(f"{cell}.status-running").count() == 0
    assert page.evaluate("window.__noReload") == "still here"
    page.screenshot(path=str(SHOTS / "run-table.png"), full_page=True)
    assert not errors, errors
