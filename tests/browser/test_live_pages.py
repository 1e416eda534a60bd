"""The run, compare, dashboard and group pages in a real headless Chromium (Debian's, via Playwright),
served by uvicorn (ASGI, as in production), with metrics written through the worker's real sink.

Screenshots go to $GFT_SCREENSHOTS (default: a temporary folder printed in the output).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install chromium) for the browser tests", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from tests.metric_support import group_record  # noqa: E402
from webapp.runs.models import GroupSample, Run  # noqa: E402

SHOTS = Path(os.environ.get("GFT_SCREENSHOTS") or tempfile.mkdtemp(prefix="gft-shots-"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def scalars(step: int, tau: float) -> dict[str, float]:
    """A plausible GFT step: every chart of the run page gets a value."""
    x = step / 10
    d = {"loss": 2.0 * math.exp(-x / 4) + 0.05 * math.sin(step), "grad_norm": 1.0 + 0.3 * math.sin(x), "lr": 1e-5,
         "tokens_per_s": 900 + 50 * math.sin(x), "time/step": 1.1, "time/rollout": 0.6, "time/reward": 0.1,
         "time/fwd_bwd": 0.4, "reward/mean": 0.3 + 0.05 * x, "reward/expert": 0.95, "reward/teacher": 0.7,
         "reward/self": 0.2 + 0.06 * x, "reward/self_accuracy": 0.2 + 0.05 * x, "response_len/mean": 40 + x,
         "adv/mean": 0.0, "adv/std": 0.9, "adv/min": -1.6, "adv/max": 1.9, "adv/expert": 0.8, "adv/teacher": 0.3,
         "adv/self": -0.4, "adv/zero_var_groups": 0.25 / (1 + x), "dcr/rectified_frac": 0.12 + 0.02 * math.sin(x),
         "dcr/rectified_frac/expert": 0.3, "dcr/rectified_frac/self": 0.02, "dcr/mean_c": 0.85, "dcr/mean_w": 1.3,
         "dcr/pi_p5": 0.02 * tau * 10, "dcr/pi_p50": 0.6, "dcr/pi_p95": 0.98, "policy/entropy": 1.2 - 0.02 * x}
    if step % 5 == 0:
        d["eval/accuracy"] = 0.1 + 0.04 * x
        d["policy/kl_start"] = 0.001 * step
    return d


def histogram(step: int) -> dict:
    counts = [int(100 * math.exp(-((i - 15 + step % 3) ** 2) / 20)) for i in range(30)]
    return {"adv/hist": {"lo": -3.0, "hi": 3.0, "counts": counts}}


def sink_for(run: Run, start_step: int, total: int):
    from workers.sink import PostgresRedisSink

    sink = PostgresRedisSink(run.pk, flush_interval=0.2)
    sink.start(total_steps=total, start_step=start_step, config=run.config)
    return sink


def log_steps(sink, steps, tau: float) -> None:
    for s in steps:
        sink.log(s, scalars(s, tau), histogram(s))
    sink.flush()


@pytest.fixture
def chromium():
    """Debian's Chromium driven by Playwright (no `playwright install`: there is no internet)."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()
        # Under Playwright's loop Django's connection is a context-local one of its own: close it,
        # or it keeps the test database open at teardown.
        from django.db import connections

        connections.close_all()


def login(browser, base: str, username: str, password: str, width: int = 1440):
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def points(page, chart: str) -> int:
    return int(page.get_attribute(f'.chart-card[data-chart="{chart}"]', "data-points") or 0)


def make_run(team, user, name: str, tau: float, status=Run.Status.RUNNING, total=200) -> Run:
    from django.utils import timezone

    return Run.objects.create(team=team, name=name, method="gft", created_by=user, status=status, total_steps=total,
                              started_at=timezone.now(), attempt=1,
                              config={"tau": tau, "lr": 1e-5, "n_expert": 1, "n_self": 4, "max_steps": total,
                                      "group_sample_interval": 10, "group_sample_count": 2})


def test_live_run_page_compare_dashboard_and_groups(live_server_url, chromium, team, user, other_user):
    base = live_server_url
    running = make_run(team, user, "gft tau 0.3", 0.3)
    done = make_run(team, user, "gft tau 0.7", 0.7, status=Run.Status.SUCCEEDED, total=40)
    sink = sink_for(running, 0, 200)
    other_sink = sink_for(done, 0, 40)
    try:
        log_steps(sink, range(1, 21), 0.3)
        log_steps(other_sink, range(1, 41), 0.7)
        for step in (10, 20):
            GroupSample.objects.create(run=running, step=step, group_index=0, data=group_record(0, "What is 2+3?"))
            GroupSample.objects.create(run=done, step=step, group_index=0, data=group_record(0, "What is 2+3?"))

        page = login(chromium, base, "alice", "alice-pass-123")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/runs/{running.pk}/")
        page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
        page.wait_for_selector(".live-note.live-sse", timeout=10_000)
        page.evaluate("window.__noReload = 'still here'")
        before = points(page, "rectified")
        assert before == 20 * 3  # overall + two sources with values in this run
        page.screenshot(path=str(SHOTS / "run-page-before.png"), full_page=True)

        # New steps through the real sink: the chart grows in place, no reload.
        log_steps(sink, range(21, 31), 0.3)
        page.wait_for_function(
            "() => Number(document.querySelector('.chart-card[data-chart=\"rectified\"]').dataset.points) >= 90",
            timeout=15_000)
        assert page.evaluate("window.__noReload") == "still here"
        # Drawn, not only stored: the plotted x range reaches the new steps.
        page.wait_for_function("() => document.getElementById('chart-rectified')._fullLayout.xaxis.range[1] >= 29",
                               timeout=5_000)
        assert "step 30 / 200" in page.inner_text(".run-head .step-text")
        page.locator(".chart-card[data-chart='rectified']").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "run-page-live.png"), full_page=True)
        # tau is drawn as a reference line on the pi quantile chart.
        assert page.locator("#chart-pi_quantiles .shapelayer path").count() >= 1
        assert page.locator("#chart-adv_hist .hm, #chart-adv_hist image").count() >= 1

        # Groups tab: shaded tokens, rectified ones marked, badges by sign; compare with the other run.
        page.click("[data-tab=groups]")
        page.wait_for_selector(".group-card .tok", timeout=10_000)
        assert page.locator(".group-card .tok.rect").count() == 2
        assert page.locator(".badge.adv.pos").count() == 1 and page.locator(".badge.adv.neg").count() == 1
        assert "step 20" in page.inner_text(".group-step-label")
        page.check("[name=group-meanc]")
        page.fill("[name=group-compare]", str(done.pk))
        page.dispatch_event("[name=group-compare]", "change")
        page.wait_for_selector(".group-pair", timeout=10_000)
        assert page.locator(".group-pair .group-card").count() == 2
        page.screenshot(path=str(SHOTS / "run-page-groups.png"), full_page=True)

        # Finish: a status event moves the badge without a reload.
        sink.close()
        from webapp.runs.services import transition

        transition(running.pk, Run.Status.SUCCEEDED)
        page.wait_for_selector(".run-head .status.status-succeeded", timeout=10_000)
        assert page.evaluate("window.__noReload") == "still here"

        # Compare two runs, from the run list checkboxes.
        page.goto(f"{base}/")
        page.screenshot(path=str(SHOTS / "run-list.png"))
        page.check(f"input[name=run-select][value='{running.pk}']")
        page.check(f"input[name=run-select][value='{done.pk}']")
        page.click("#compare-form button[type=submit]")
        page.wait_for_url(f"**/compare/?runs=*")
        page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
        assert points(page, "loss") == 30 + 40
        assert "tau" in page.inner_text("table.diff") and "lr" not in page.inner_text("table.diff").split()
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

        # Save as a dashboard (two charts, smoothing 0.5), reopen it from the list.
        page.fill("#save-dashboard [name=name]", "tau sweep")
        page.check("#save-dashboard [name=charts][value=rectified]")
        page.check("#save-dashboard [name=charts][value=loss]")
        page.eval_on_selector("#chart-toolbar [name=smoothing]",
                              "el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
        page.click("#save-dashboard button[type=submit]")
        page.wait_for_url("**/dashboards/*/")
        dash_url = page.url
        page.goto(f"{base}/dashboards/")
        page.click("text=tau sweep")
        page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
        assert page.locator(".chart-card").count() == 2
        assert page.input_value("#chart-toolbar [name=smoothing]") == "0.5"
        page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
        assert not errors, errors

        # Laptop width: the same run page, charts in one or two columns.
        small = login(chromium, base, "alice", "alice-pass-123", width=1024)
        small.goto(f"{base}/runs/{done.pk}/")
        small.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
        small.screenshot(path=str(SHOTS / "run-page-laptop.png"), full_page=False)
        # Zoom (as a drag does): the range is fetched again at full resolution for that range.
        small.evaluate("Plotly.relayout('chart-loss', {'xaxis.range[0]': 10, 'xaxis.range[1]': 20})")
        small.wait_for_selector(".chart-card[data-chart='loss'] .zoom-note:not([hidden])", timeout=10_000)
        xs = small.evaluate("document.getElementById('chart-loss').data[0].x")
        assert xs == list(range(10, 21))
        # x by wall time: the axis becomes a date axis.
        small.select_option("#chart-toolbar [name=xmode]", "wall")
        small.wait_for_function("() => document.getElementById('chart-loss')._fullLayout.xaxis.type === 'date'",
                                timeout=5_000)

        # Another team: 404 on every one of these URLs.
        bob = login(chromium, base, "bob", "bob-pass-123")
        for url in (f"/runs/{running.pk}/", f"/compare/?runs={running.pk},{done.pk}", dash_url,
                    f"/runs/{running.pk}/groups/", f"/runs/{running.pk}/stream/"):
            resp = bob.goto(url if url.startswith("http") else base + url)
            assert resp.status == 404, url
        print(f"\nscreenshots in {SHOTS}")
    finally:
        sink.close()
        other_sink.close()


def test_polling_fallback_when_the_stream_is_unavailable(live_server_url, chromium, team, user):
    base = live_server_url
    run = make_run(team, user, "no redis", 0.3)
    sink = sink_for(run, 0, 200)
    try:
        log_steps(sink, range(1, 6), 0.3)
        page = login(chromium, base, "alice", "alice-pass-123")
        # The stream answers 503, as the view does when Redis is down.
        page.route("**/stream/**", lambda route: route.fulfill(status=503, body="live stream unavailable"))
        page.goto(f"{base}/runs/{run.pk}/")
        page.wait_for_selector(".live-note.live-polling", timeout=15_000)
        assert "polling" in page.inner_text("#live-note")
        log_steps(sink, range(6, 9), 0.3)
        page.wait_for_function(
            "() => Number(document.querySelector('.chart-card[data-chart=\"loss\"]').dataset.points) >= 8",
            timeout=20_000)
        page.wait_for_function("() => document.getElementById('chart-loss')._fullLayout.xaxis.range[1] >= 7.9",
                               timeout=5_000)
        page.screenshot(path=str(SHOTS / "run-page-polling.png"))
    finally:
        sink.close()
