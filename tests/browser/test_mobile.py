"""Every main page at a phone's width (390 px) in a real headless Chromium served by uvicorn: the
navigation folds into a menu that reaches API, the team and Log out; no page scrolls sideways; the
Groups tab's cards fit, a tapped token shows its details and the step slider says which steps have
groups. Metrics and groups are written through the worker's real sink."""
from __future__ import annotations

from tests.browser.support import SHOTS, log_steps, login, make_run, sink_for
from tests.metric_support import group_record
from tests.runs_support import reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs.models import GroupSample, Run

WIDTH = 390
# The elements that stick out past the right edge (for the failure message).
_OVERFLOW = """() => {
  const w = window.innerWidth, out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > w + 1) out.push(`${el.tagName.toLowerCase()}#${el.id}.${[...el.classList].join('.')} right=${Math.round(r.right)}`);
  }
  return {scroll: document.scrollingElement.scrollWidth, inner: w, wide: out.slice(0, 8)};
}"""


def fits(page, what: str, wide: list[str]) -> None:
    """Adds `what` to `wide` when the page scrolls sideways (all pages are checked, then reported)."""
    m = page.evaluate(_OVERFLOW)
    if m["scroll"] > m["inner"]:
        wide.append(f"{what} scrolls sideways: {m}")


def test_every_main_page_fits_a_phone(live_server_url, chromium, team, user, toy_dataset, reward_config):
    base = live_server_url
    run = make_run(team, user, "phone run with a long name to wrap " * 2, 0.3, total=40)
    other = make_run(team, user, "other", 0.7, status=Run.Status.SUCCEEDED, total=12)
    sink = sink_for(run, 0, 40)
    try:
        log_steps(sink, range(1, 13), 0.3)
    finally:
        sink.close()
    for step in (4, 8, 12):
        GroupSample.objects.create(run=run, step=step, group_index=0, data=group_record(0, "What is 2+3? " * 8))

    page = login(chromium, base, "alice", "alice-pass-123", width=WIDTH)
    errors: list[str] = []
    wide: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The navigation: folded behind one button; opened, every link is on screen.
    assert page.locator(".topbar nav").is_hidden()
    page.click(".topbar .menu-toggle")
    for target in (".topbar a[href='/api/docs/']", ".topbar #team-select", ".topbar button:has-text('Log out')",
                   ".topbar a[href='/alerts/']"):
        box = page.locator(target).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (target, box)
    fits(page, "the run list with the menu open", wide)
    page.screenshot(path=str(SHOTS / "phone-menu.png"))

    for path in ("/", "/runs/new/", f"/runs/compare/?runs={run.pk},{other.pk}", "/dashboards/", "/datasets/",
                 f"/datasets/{toy_dataset.pk}/", "/rewards/", f"/rewards/{reward_config.pk}/", "/evaluations/suites/",
                 "/evaluations/references/", "/sweeps/", "/sweeps/new/", "/pipelines/", "/pipelines/new/", "/alerts/",
                 "/accounts/tokens/"):
        page.goto(base + path)
        page.wait_for_load_state("load")
        fits(page, path, wide)

    # The run page, tab by tab.
    page.goto(f"{base}/runs/{run.pk}/")
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    for tab in ("charts", "evaluation", "config", "files", "groups"):
        page.click(f"[data-tab={tab}]")
        page.wait_for_timeout(300)
        fits(page, f"the run page's {tab} tab", wide)
    page.wait_for_selector(".group-card .tok", timeout=10_000)
    card = page.locator(".group-card").first.bounding_box()
    assert card["x"] >= 0 and card["x"] + card["width"] <= WIDTH
    assert page.inner_text(".group-steps") == "Groups sampled at 3 steps: 4, 8, 12"
    # A tap on a token: its pi, C and C/pi show (touch screens have no tooltip).
    page.locator(".group-card .tok").first.click()
    detail = page.locator(".tok-detail")
    assert detail.is_visible() and "pi = " in detail.inner_text() and "C/pi = " in detail.inner_text()
    box = detail.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH
    fits(page, "the groups tab with a token's details open", wide)
    page.screenshot(path=str(SHOTS / "phone-groups.png"), full_page=True)
    assert not wide, "\n".join(wide)
    assert not errors, errors
