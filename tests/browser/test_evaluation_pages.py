"""Evaluation pages in a real headless Chromium, served by uvicorn: the run page's Evaluation tab
draws the stored accuracies (and picks up a result that lands while it is open), the leaderboard
sorts by a clicked header, and the paper button adds the reference rows.
Screenshots go to $GFT_SCREENSHOTS (default: a temporary folder printed in the output)."""
from __future__ import annotations

from tests.browser.support import SHOTS, login
from tests.eval_pages_support import evaluate, standard_picture
from webapp.evaluations import references

ACCURACY = "(i) => { const el = document.getElementById('acc-' + i); return el && el.data ? el.data[0] : null; }"


def run_names(page) -> list[str]:
    return page.eval_on_selector_all("table.leaderboard tbody.lb-runs tr td:first-child a", "as => as.map(a => a.textContent)")


def test_evaluation_tab_leaderboard_and_references(live_server_url, chromium, team, user, tmp_path):
    base = live_server_url
    pic = standard_picture(team, user, tmp_path)
    a, b, suite = pic["a"], pic["b"], pic["suite"]
    references.add_reference(team, model="Qwen2.5-Math-1.5B", method="GFT", benchmark="MATH", value=55.5)
    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Evaluation tab: one accuracy chart per benchmark with the stored values (step 0 = base model).
    page.goto(f"{base}/runs/{a.pk}/#evaluation")
    page.wait_for_selector("#evaluation-panel[data-ready='1'] .chart-card[data-benchmark='math500'] .main-svg",
                           timeout=20_000)
    names = page.eval_on_selector_all(".eval-charts .chart-card", "cs => cs.map(c => c.dataset.benchmark)")
    assert names == ["math500", "gsm8k_test"]
    trace = page.evaluate(ACCURACY, 0)
    assert trace["x"] == [0, 10, 20] and trace["y"] == [50, 75, 50]
    assert page.evaluate(ACCURACY, 1)["y"] == [25, 50, 100]
    # The reference of the run's base model is a dashed line on the MATH (math500) chart.
    shapes = page.evaluate("document.getElementById('acc-0').layout.shapes")
    assert [(s["y0"], s["line"]["dash"]) for s in shapes] == [(55.5, "dash")]
    assert page.locator("#acc-0 .shapelayer path").count() >= 1
    # pass@k of the latest evaluated checkpoint (step 20), and the per-problem view.
    assert "step 20" in page.inner_text(".eval-passk .chart-title")
    page.wait_for_selector(".eval-diff .problem-card", timeout=10_000)
    gained = page.locator(".eval-diff .gained .problem-card")
    assert gained.count() == 1 and "What is 2 + 0?" in gained.inner_text()
    assert page.locator(".eval-diff .lost .problem-card").count() == 1
    # each evaluation says how its prompts were built: the run's format (the small model has no template)
    assert "prompt format" in page.inner_text(".eval-jobs-table thead")
    assert page.inner_text(".eval-jobs-table tbody td.prompt-format") == f"plain (the model has no chat template) (run #{a.pk})"
    page.screenshot(path=str(SHOTS / "run-evaluation-tab.png"), full_page=True)

    # A result that lands while the tab is open appears without a reload (the tab polls).
    page.evaluate("window.__noReload = 'still here'")
    evaluate(team, user, suite, pic["benchmarks"], {"math500": [[True, True], [True, True]],
                                                    "gsm8k_test": [[True, True], [True, True]]}, run=a, step=20)
    page.wait_for_function("() => document.getElementById('acc-0').data[0].y[2] === 100", timeout=15_000)
    assert page.evaluate("window.__noReload") == "still here"

    # Leaderboard on the compare page: clicking a header sorts the runs by it, again reverses.
    page.goto(f"{base}/compare/?runs={b.pk},{a.pk}&lb_suite={suite.pk}")
    page.wait_for_selector("table.leaderboard")
    assert run_names(page) == [f"#{b.pk} sft B", f"#{a.pk} gft A"]
    page.click("table.leaderboard thead th:has-text('Average')")
    assert run_names(page) == [f"#{a.pk} gft A", f"#{b.pk} sft B"]
    page.click("table.leaderboard thead th:has-text('Average')")
    assert run_names(page) == [f"#{b.pk} sft B", f"#{a.pk} gft A"]
    assert "Base model" in page.inner_text("table.leaderboard tbody.lb-fixed")
    page.screenshot(path=str(SHOTS / "compare-leaderboard.png"), full_page=True)

    # References page: the paper button adds the paper's rows, labelled as reported by the paper.
    page.goto(f"{base}/evaluations/references/")
    before = page.locator("#reference-table tbody tr").count()
    page.click("#add-paper button")
    page.wait_for_selector("#reference-table tr.from-paper")
    assert page.locator("#reference-table tr.from-paper").count() > 50 and before == 1
    assert "reported by the paper" in page.inner_text("#reference-table tr.from-paper >> nth=0")
    page.screenshot(path=str(SHOTS / "references.png"), full_page=True)
    # ... and they show on the leaderboard, below the runs.
    page.goto(f"{base}/compare/?runs={b.pk},{a.pk}&lb_suite={suite.pk}")
    assert page.locator("table.leaderboard tbody.lb-fixed tr.from-paper").count() > 5
    # Suites page: the suite with its benchmarks and settings, the form, "Evaluate a base model".
    page.goto(f"{base}/evaluations/suites/")
    assert "math500, gsm8k_test" in page.inner_text(f"#suite-table tr[data-suite='{suite.pk}']")
    page.screenshot(path=str(SHOTS / "eval-suites.png"), full_page=True)
    assert not errors, errors
    print(f"\nscreenshots in {SHOTS}")
