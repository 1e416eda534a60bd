"""Charts that follow the data (issue 20, item 1), in real Chromium on uvicorn with the worker's sink:
a page opened before the first metric rescales as points arrive; the log scale says what it cannot
draw; axis titles; synced zoom; settings kept in the URL."""
from __future__ import annotations

from tests.browser.support import SHOTS, log_steps, login, make_run, points, sink_for

RANGE = "id => document.getElementById('chart-' + id)._fullLayout.{axis}.range"
# Charts whose drawn margins differ from their layout's: Plotly's automargin had to push them, and
# drew that chart twice (charts.js gives margins that hold the labels, titles and colour bar).
PUSHED = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(g => {
    const s = g._fullLayout._size, m = g._fullLayout.margin;
    return s.l !== m.l || s.r !== m.r || s.t !== m.t || s.b !== m.b;
  }).map(g => `${g.id} l r t b ${['l', 'r', 't', 'b'].map(k => g._fullLayout._size[k] + '/' + g._fullLayout.margin[k])}`)"""


def _y_fits_data(page, chart: str) -> bool:
    """The y axis spans the chart's data snugly (autorange), not a range kept from an earlier draw."""
    return page.evaluate("""id => {
        const el = document.getElementById('chart-' + id);
        const ys = el.data.flatMap(t => t.y).filter(v => v !== null && v !== undefined);
        const [a, b] = el._fullLayout.yaxis.range, lo = Math.min(...ys), hi = Math.max(...ys);
        return a <= lo && b >= hi && (b - a) < 3 * (hi - lo);
    }""", chart)


def test_charts_follow_live_data_log_sync_and_url(live_server_url, chromium, team, user):
    base = live_server_url
    run = make_run(team, user, "opened before metrics", 0.3)
    sink = sink_for(run, 0, 200)
    try:
        page = login(chromium, base, "alice", "alice-pass-123")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/runs/{run.pk}/")
        page.wait_for_selector("body[data-charts-drawn]", timeout=20_000)
        page.wait_for_selector(".live-note.live-sse", timeout=10_000)
        assert points(page, "loss") == 0
        # Charts without data say so without drawing empty Plotly axes; their first points draw them.
        assert page.locator(".chart-card.empty").count() >= 18
        assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 0
        # The first point alone (drawn on a padded range), then more: the axis must follow them.
        log_steps(sink, [1], 0.3)
        page.wait_for_function("() => document.querySelector('.chart-card[data-chart=\"loss\"]').dataset.points === '1'",
                               timeout=15_000)
        page.wait_for_timeout(400)
        log_steps(sink, range(2, 13), 0.3)
        page.wait_for_function("() => document.querySelector('.chart-card[data-chart=\"loss\"]').dataset.points === '12'",
                               timeout=15_000)
        page.wait_for_timeout(400)
        for chart in ("loss", "grad_norm", "tokens_per_s", "entropy"):
            assert _y_fits_data(page, chart), (chart, page.evaluate(RANGE.format(axis="yaxis"), chart))
        # Axis titles with units; "step" labelled.
        layout = page.evaluate("document.getElementById('chart-tokens_per_s')._fullLayout")
        assert layout["xaxis"]["title"]["text"] == "step" and layout["yaxis"]["title"]["text"] == "tokens / s"
        # Every chart (the heatmap's colour bar too) drawn in one pass: automargin pushed nothing.
        pushed = page.evaluate(PUSHED)
        assert page.locator(".chart-card:not(.empty)").count() >= 18 and pushed == [], pushed

        # Log scale: the negative self advantages cannot be drawn, and the chart says so.
        page.check("#chart-toolbar [name=logscale]")
        note = page.locator(".chart-card[data-chart='adv_source'] .log-note")
        note.wait_for(state="visible", timeout=5_000)
        assert "12 values ≤ 0 not drawn" in note.inner_text()
        assert "adv/self" in note.get_attribute("title")
        assert page.locator(".chart-card[data-chart='loss'] .log-note").is_hidden()
        assert page.evaluate("document.getElementById('chart-loss')._fullLayout.yaxis.type") == "log"

        # Synced zoom (on by default): zooming one chart zooms the others to the same steps.
        page.evaluate("Plotly.relayout('chart-loss', {'xaxis.range[0]': 3, 'xaxis.range[1]': 8})")
        page.wait_for_function("() => { const r = document.getElementById('chart-grad_norm')._fullLayout.xaxis.range;"
                               " return r[0] === 3 && r[1] === 8; }", timeout=10_000)
        assert page.locator(".chart-card[data-chart='entropy'] .zoom-note").is_visible()
        # Live points do not undo a zoom.
        log_steps(sink, range(13, 16), 0.3)
        page.wait_for_function("() => document.querySelector('.chart-card[data-chart=\"loss\"]').dataset.points === '15'",
                               timeout=15_000)
        assert page.evaluate(RANGE.format(axis="xaxis"), "loss") == [3, 8]
        page.screenshot(path=str(SHOTS / "charts-log-zoom.png"), full_page=True)

        # Settings in the URL: a reload (or a shared link) shows the same charts.
        page.select_option("#chart-toolbar [name=xmode]", "relative")
        assert "log=1" in page.url and "x=relative" in page.url
        page.reload()
        page.wait_for_selector("body[data-charts-drawn]", timeout=20_000)
        assert page.is_checked("#chart-toolbar [name=logscale]")
        assert page.input_value("#chart-toolbar [name=xmode]") == "relative"
        assert page.evaluate("document.getElementById('chart-loss')._fullLayout.xaxis.title.text") == \
            "time since start (min)"
        assert page.evaluate(PUSHED) == []  # log axes, minutes on x
        page.select_option("#chart-toolbar [name=xmode]", "wall")
        page.wait_for_function("() => document.getElementById('chart-loss')._fullLayout.xaxis.type === 'date'", timeout=10_000)
        pushed = page.evaluate(PUSHED)
        assert pushed == [], pushed  # dates on two lines
        # No favicon 404 (every page asked for it).
        assert page.request.get(f"{base}/favicon.ico").status == 200
        assert not errors, errors
    finally:
        sink.close()
