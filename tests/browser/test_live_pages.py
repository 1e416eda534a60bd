"""The run, compare, dashboard and group pages in a real headless Chromium (Debian's, via Playwright),
served by uvicorn (ASGI, as in production), with metrics written through the worker's real sink.
(tests/browser/test_run_from_form.py does the same with a run launched from the form and trained
by a real worker.) Screenshots go to $GFT_SCREENSHOTS (default: a temporary folder printed in the output).
"""
from __future__ import annotations

from tests.browser.support import SHOTS, log_steps, login, make_run, points, sink_for
from tests.metric_support import group_record
from tests.runs_support import wait_for
from webapp.runs.models import GroupSample, Run, RunEvent
from workers.devices import probe_devices
from workers.system import SystemSampler, describe_device


def test_live_run_page_compare_dashboard_and_groups(live_server_url, chromium, team, user, other_user):
    base = live_server_url
    running = make_run(team, user, "gft tau 0.3", 0.3)
    done = make_run(team, user, "gft tau 0.7", 0.7, status=Run.Status.SUCCEEDED, total=40)
    done.config["model"] = "/models/" + "a1b2c3d4" * 40  # an unbreakable path in the config diff
    done.save(update_fields=["config"])
    sink = sink_for(running, 0, 200)
    other_sink = sink_for(done, 0, 40)
    try:
        log_steps(sink, range(1, 21), 0.3)
        log_steps(other_sink, range(1, 41), 0.7)
        RunEvent.objects.create(run=running, kind="status", from_status="queued", to_status="running",
                                data={"device": describe_device(1)})
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
        # The device in the header; the System section waits for the worker's first sample, which
        # shows it live (real samples through the real sink, at step 20); no GPU charts without GPUs.
        assert page.inner_text(".run-head .device") == f"on {describe_device(1)}"
        system = page.locator(".chart-group:has(.chart-card[data-chart='system_cpu'])")
        assert system.is_hidden()
        with SystemSampler(sink, num_gpus=1, interval=0.05) as sampler:
            wait_for(lambda: sampler.samples, timeout=10, what="a system sample")
        sink.flush()
        page.wait_for_selector(".chart-card[data-chart='system_memory'][data-points='2']", timeout=15_000)
        assert system.is_visible() and system.locator("h2").inner_text() == "System"
        assert page.locator(".chart-card[data-chart='system_gpu_mem']").is_visible() == bool(probe_devices())
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
        # The long path wraps inside its cell: the table stays as wide as its card.
        assert page.eval_on_selector("table.diff", "t => t.scrollWidth <= t.closest('.card').clientWidth")
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

        # Save as a dashboard (two charts, smoothing 0.5), reopen it from the list.
        page.fill("#save-dashboard [name=name]", "tau sweep")
        page.check("#save-dashboard [name=charts][value=rectified]")
        page.check("#save-dashboard [name=charts][value=loss]")
        page.eval_on_selector("#chart-toolbar [name=smoothing]",
                              "el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
        page.select_option("#chart-toolbar [name=xmode]", "relative")
        page.click("#save-dashboard button[type=submit]")
        page.wait_for_url("**/dashboards/*/")
        dash_url = page.url
        page.goto(f"{base}/dashboards/")
        page.click("text=tau sweep")
        page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
        assert page.locator(".chart-card").count() == 2
        assert page.input_value("#chart-toolbar [name=smoothing]") == "0.5"
        assert page.input_value("#chart-toolbar [name=xmode]") == "relative"  # saved with the dashboard
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
