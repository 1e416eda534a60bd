"""As a new user would, in headless Chromium against uvicorn with a real Celery worker training the
small test model: log in, launch a run from the form, watch the rectification chart grow live
(no reload), cancel it from the page, compare it with another run, save and reopen a dashboard;
a user of another team gets 404 on those URLs. Also: a queued run's place in the queue and a
running run's ETA, live on the run page.
"""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.browser.support import SHOTS, log_steps, login, make_run, sink_for
from tests.metric_support import write_step
from tests.runs_support import reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs.models import MetricKey, MetricPoint, Run
from webapp.runs.services import request_cancel, transition

RECTIFIED = "dcr/rectified_frac"


# Points Plotly has drawn for the trace `name` of a chart (its calcdata, built at the last draw;
# the trace's own arrays are the page's store, which grows before the throttled redraw).
_DRAWN = """([chart, name]) => {
  const gd = document.getElementById(`chart-${chart}`);
  const i = (gd.data || []).findIndex(t => t.name === name);
  return i < 0 || !gd.calcdata || !gd.calcdata[i] ? 0 : gd.calcdata[i].length;
}"""


def trace_points(page, chart: str, name: str) -> int:
    """Points drawn in the Plotly trace `name` of the chart (0 while it has none)."""
    return page.evaluate(_DRAWN, [chart, name])


def wait_trace_points(page, chart: str, name: str, at_least: int, timeout_ms: int) -> None:
    page.wait_for_function(f"([chart, name, n]) => ({_DRAWN})([chart, name]) >= n", arg=[chart, name, at_least],
                           timeout=timeout_ms)


def main_frame_navigations(page) -> list[str]:
    """URLs the tab's main frame navigates to from now on (a reload would add one)."""
    navs: list[str] = []
    page.on("framenavigated", lambda frame: navs.append(frame.url) if frame == page.main_frame else None)
    return navs


def stored_steps(run_id: int, key: str) -> int:
    kid = MetricKey.objects.get(name=key).pk
    return MetricPoint.objects.filter(run_id=run_id, key_id=kid).count()


def test_launch_from_form_watch_live_cancel_compare_dashboard(live_server_url, celery_worker, chromium, team, user,
                                                              other_user, tiny_assets, toy_dataset, reward_config):
    base = live_server_url
    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Launch from the form: tiny sizes, more steps than the test waits for (it cancels).
    page.goto(f"{base}/runs/new/")
    page.fill("#id_name", "from the form")
    page.fill("#id_model", str(tiny_assets["model"]))
    page.select_option("#id_dataset", str(toy_dataset.pk))
    page.select_option("#id_eval_split", "none")
    page.select_option("#id_reward_config", str(reward_config.pk))
    for field, value in {"n_expert": "1", "n_teacher": "1", "n_self": "2", "tau": "0.5", "lr": "0.001",
                         "warmup_steps": "0", "prompts_per_step": "2", "micro_batch_size": "8",
                         "max_prompt_len": "48", "max_response_len": "12", "max_steps": "500",
                         "eval_interval": "0", "checkpoint_interval": "0"}.items():
        page.fill(f"#id_{field}", value)
    page.screenshot(path=str(SHOTS / "launch-form.png"), full_page=True)
    page.click(".launch-form button[type=submit]")
    page.wait_for_url(f"{base}/runs/*/")
    run = Run.objects.get(name="from the form")
    assert page.url == f"{base}/runs/{run.pk}/"
    assert run.dataset_id == toy_dataset.pk and run.reward_config_id == reward_config.pk

    # Live: the rectification chart gains points in place, over the run's stream.
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    navs = main_frame_navigations(page)
    wait_trace_points(page, "rectified", RECTIFIED, 1, timeout_ms=180_000)  # the trainer is up
    first = trace_points(page, "rectified", RECTIFIED)
    wait_trace_points(page, "rectified", RECTIFIED, first + 3, timeout_ms=60_000)
    assert trace_points(page, "rectified", RECTIFIED) > first
    assert navs == [] and page.evaluate("window.__noReload") == "still here"
    assert page.locator(".live-note.live-sse").count() == 1
    page.wait_for_function("() => document.querySelector('.run-head .eta').textContent.startsWith('ETA ')",
                           timeout=20_000)
    assert page.locator(".run-head .status.status-running").count() == 1
    page.locator(".chart-card[data-chart='rectified']").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "form-run-live.png"), full_page=True)

    # The Logs page follows the live log: step lines arrive without a reload; paused, the view
    # stays where the user put it; following again goes to the newest line.
    logs = page.context.new_page()
    logs.on("pageerror", lambda e: errors.append(str(e)))
    logs.goto(f"{base}/runs/{run.pk}/logs/")
    count = "() => (document.getElementById('log-text').textContent.match(/step \\d+\\/500 loss=/g) || []).length"
    logs.wait_for_function(f"() => ({count})() >= 1", timeout=60_000)
    logs.evaluate("document.getElementById('log-text').style.maxHeight = '60px'")  # a log taller than its box
    at_bottom = "() => { const p = document.getElementById('log-text'); return p.scrollTop + p.clientHeight >= p.scrollHeight - 2; }"
    logs.wait_for_function(f"() => ({count})() > {logs.evaluate(count)}", timeout=60_000)
    assert logs.get_attribute("#log-follow", "aria-pressed") == "true" and logs.evaluate(at_bottom)
    logs.click("#log-follow")
    assert logs.get_attribute("#log-follow", "aria-pressed") == "false" and logs.inner_text("#log-follow") == "Paused"
    logs.evaluate("document.getElementById('log-text').scrollTop = 0")
    logs.wait_for_function(f"() => ({count})() > {logs.evaluate(count)}", timeout=60_000)  # lines still arrive
    assert logs.evaluate("document.getElementById('log-text').scrollTop") == 0
    logs.click("#log-follow")
    assert logs.get_attribute("#log-follow", "aria-pressed") == "true" and logs.evaluate(at_bottom)
    logs.screenshot(path=str(SHOTS / "form-run-logs.png"), full_page=True)

    # Cancel from the page: the trainer stops at its next step; the badge follows the stream.
    page.bring_to_front()
    page.click(".run-head .cancel-run button")
    page.wait_for_selector(".run-head .status.status-cancelled", timeout=60_000)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and 0 < run.step < 500, (run.error, run.log_tail)
    # Every stored step is drawn.
    wait_trace_points(page, "rectified", RECTIFIED, stored_steps(run.pk, RECTIFIED), timeout_ms=10_000)
    assert trace_points(page, "rectified", RECTIFIED) == stored_steps(run.pk, RECTIFIED) == run.step
    # The Logs page saw the end too, and stopped polling.
    logs.wait_for_function("() => document.getElementById('log-text').textContent.includes('ends cancelled')",
                           timeout=20_000)
    logs.wait_for_selector("#log-status.status-cancelled", timeout=10_000)
    logs.close()
    # Nothing left to cancel; resume is offered instead (no reload).
    assert page.locator(".run-head .cancel-run").is_hidden() and page.locator(".run-head .resume-run").is_visible()
    page.screenshot(path=str(SHOTS / "form-run-cancelled.png"), full_page=True)

    # Compare with another run of the team, picked from the run list.
    other = make_run(team, user, "baseline", 0.3, status=Run.Status.SUCCEEDED, total=12)
    sink = sink_for(other, 0, 12)
    try:
        log_steps(sink, range(1, 13), 0.3)
    finally:
        sink.close()
    page.goto(f"{base}/")
    page.check(f"input[name=run-select][value='{run.pk}']")
    page.check(f"input[name=run-select][value='{other.pk}']")
    page.click("#compare-form button[type=submit]")
    page.wait_for_url("**/compare/?runs=*")
    compare_url = page.url
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    assert trace_points(page, "rectified", f"#{run.pk} from the form · {RECTIFIED}") == run.step
    assert trace_points(page, "rectified", f"#{other.pk} baseline · {RECTIFIED}") == 12
    assert "tau" in page.inner_text("table.diff")
    page.screenshot(path=str(SHOTS / "form-run-compare.png"), full_page=True)

    # Save the comparison as a dashboard, reopen it from the team's list.
    page.fill("#save-dashboard [name=name]", "form run vs baseline")
    page.check("#save-dashboard [name=charts][value=rectified]")
    page.check("#save-dashboard [name=charts][value=loss]")
    page.click("#save-dashboard button[type=submit]")
    page.wait_for_url("**/dashboards/*/")
    dashboard_url = page.url
    page.goto(f"{base}/dashboards/")
    page.click("text=form run vs baseline")
    page.wait_for_url(dashboard_url)
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    assert [c.get_attribute("data-chart") for c in page.locator(".chart-card").all()] == ["loss", "rectified"]
    assert trace_points(page, "rectified", f"#{run.pk} from the form · {RECTIFIED}") == run.step
    page.screenshot(path=str(SHOTS / "form-run-dashboard.png"), full_page=True)
    assert errors == []

    # Another team's user, logged in through the same page: 404 on every one of these URLs.
    bob = login(chromium, base, "bob", "bob-pass-123")
    for url in (f"{base}/runs/{run.pk}/", compare_url, dashboard_url, f"{base}/runs/{run.pk}/logs/",
                f"{base}/runs/new/?clone={run.pk}"):
        assert bob.goto(url).status == 404, url
    print(f"\nscreenshots in {SHOTS}")


def test_queue_position_and_eta_update_live(live_server_url, chromium, team, user):
    base = live_server_url
    now = timezone.now()
    ahead = Run.objects.create(team=team, created_by=user, name="ahead", method="gft", config={"tau": 0.3},
                               status=Run.Status.QUEUED, queued_at=now - timedelta(seconds=10))
    run = Run.objects.create(team=team, created_by=user, name="waiting", method="gft", config={"tau": 0.3},
                             status=Run.Status.QUEUED, queued_at=now, total_steps=100)
    page = login(chromium, base, "alice", "alice-pass-123")
    page.goto(f"{base}/runs/{run.pk}/")
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    assert page.inner_text(".run-head .queue-pos") == "queue position 2 on gpu"

    request_cancel(ahead)  # the run ahead leaves the queue; the page re-reads its place
    page.wait_for_function("() => document.querySelector('.run-head .queue-pos b').textContent === '1'",
                           timeout=15_000)
    page.screenshot(path=str(SHOTS / "run-queued.png"))

    # It starts: the queue position goes, steps 2 s apart (by their step times) give the ETA.
    transition(run.pk, Run.Status.RUNNING, worker="w")
    page.wait_for_selector(".run-head .status.status-running", timeout=10_000)
    assert page.locator(".run-head .queue-pos").is_hidden()
    t0 = now.timestamp()
    for step in (1, 2, 3):
        write_step(run, step, {"loss": 1.0 / step}, t=t0 + 2.0 * step)
    page.wait_for_function("() => document.querySelector('.run-head .step-text').textContent.startsWith('step 3 / 100')",
                           timeout=10_000)
    assert page.inner_text(".run-head .eta") == "ETA 3m 14s"  # 2 s x 97 steps left
    wait_trace_points(page, "loss", "loss", 3, timeout_ms=5_000)
    assert page.evaluate("window.__noReload") == "still here"
    page.screenshot(path=str(SHOTS / "run-eta.png"))


def test_launch_form_rescales_its_defaults_for_a_typed_model(live_server_url, chromium, team, user, settings):
    """Typing a large model's path fills the paper-scale defaults into the fields the user has not
    edited and says so; an edited field keeps its value; a path outside the roots says why."""
    import json
    from pathlib import Path

    big = Path(settings.MODEL_ROOTS[0]) / "qwen-1.5b-shaped"
    big.mkdir(parents=True, exist_ok=True)
    (big / "config.json").write_text(json.dumps({"hidden_size": 1536, "num_hidden_layers": 28,
                                                  "intermediate_size": 8960, "vocab_size": 151936}))
    page = login(chromium, live_server_url, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server_url}/runs/new/")
    assert page.input_value("#id_max_response_len") == "48" and page.input_value("#id_lr") == "0.0001"
    page.fill("#id_seed", "7")  # edited by the user: must stay
    page.fill("#id_model", str(big))
    page.press("#id_model", "Tab")  # commits the value: the change event
    page.wait_for_function("document.getElementById('model-defaults-note').textContent.includes('paper-scale')")
    assert page.input_value("#id_max_response_len") == "2048" and float(page.input_value("#id_lr")) == 1e-6
    assert page.input_value("#id_mixed_precision") == "bf16" and page.input_value("#id_prompts_per_step") == "128"
    assert page.input_value("#id_seed") == "7"
    note = page.inner_text("#model-defaults-note")
    assert "max_response_len" in note and "Kept your edits: seed" in note
    page.fill("#id_model", "/etc")
    page.press("#id_model", "Tab")
    page.wait_for_function("document.getElementById('model-defaults-note').textContent.includes('outside')")
    assert page.input_value("#id_max_response_len") == "2048"  # nothing changed by a refused path
    page.screenshot(path=str(SHOTS / "launch-defaults.png"), full_page=True)
    assert errors == []


def test_launch_form_model_notes_and_the_paper_recipe(live_server_url, chromium, team, user, tiny_assets):
    """The model's notes (no chat template: plain prompts; trainable parameters following the LoRA
    rank; the memory plan), and the gft-paper recipe: its diff shows, its values fill the fields
    the user has not edited."""
    page = login(chromium, live_server_url, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server_url}/runs/new/")
    page.fill("#id_model", str(tiny_assets["model"]))
    page.press("#id_model", "Tab")
    page.wait_for_function("document.getElementById('trainable-note').textContent.includes('Trainable parameters')")
    assert "no chat template" in page.inner_text("#chat-template-note")
    assert "Memory plan" in page.inner_text("#memory-note") and "strategy: one GPU" in page.inner_text("#memory-note")
    full = page.inner_text("#trainable-note")
    page.fill("#id_lora_rank", "4")
    page.wait_for_function(f"document.getElementById('trainable-note').textContent !== {full!r}")
    assert "(100.00%)" in full and "(100.00%)" not in page.inner_text("#trainable-note")

    page.fill("#id_n_self", "2")  # edited by the user: must stay
    assert page.is_hidden("[data-recipe='gft-paper']")
    page.select_option("#id_recipe", "gft-paper")
    page.wait_for_function("document.getElementById('id_tau').value === '0.1'", timeout=10_000)
    assert page.is_visible("[data-recipe='gft-paper']") and "tau" in page.inner_text("[data-recipe='gft-paper']")
    assert page.input_value("#id_max_response_len") == "2048" and page.input_value("#id_n_self") == "2"
    page.screenshot(path=str(SHOTS / "launch-recipe.png"), full_page=True)
    assert errors == []


def test_choosing_sft_hides_tau_and_fits_the_micro_batch(live_server_url, chromium, team, user, tiny_assets,
                                                        toy_dataset, reward_config):
    """SFT reads neither tau nor teacher/self counts: the form hides them. Its rollout is 4 prompts
    x 1 expert answer = 4 sequences, so the tiny model's micro-batch of 8 becomes 4 (it stays 8
    when edited by hand), and the form submits as it stands: a valid SFT run is queued."""
    page = login(chromium, live_server_url, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server_url}/runs/new/")
    assert page.input_value("#id_micro_batch_size") == "8" and page.is_visible("#id_tau")
    page.select_option("#id_method", "sft")
    page.wait_for_function("document.getElementById('id_micro_batch_size').value === '4'", timeout=10_000)
    for hidden in ("tau", "n_teacher", "n_self", "temperature"):
        assert page.is_hidden(f"#id_{hidden}"), hidden
    assert page.is_visible("#id_n_expert") and page.is_visible("#id_lr")
    assert "micro_batch_size" in page.inner_text("#method-defaults-note")
    page.screenshot(path=str(SHOTS / "launch-sft.png"), full_page=True)

    page.select_option("#id_method", "gft")  # back: tau shows again; the micro-batch fits 4 x 8
    page.wait_for_function("document.getElementById('id_micro_batch_size').value === '8'", timeout=10_000)
    assert page.is_visible("#id_tau") and page.is_visible("#id_n_self")
    page.select_option("#id_method", "sft")
    page.wait_for_function("document.getElementById('id_micro_batch_size').value === '4'", timeout=10_000)

    page.fill("#id_name", "sft from the form")
    page.fill("#id_model", str(tiny_assets["model"]))
    page.select_option("#id_dataset", str(toy_dataset.pk))
    page.select_option("#id_reward_config", str(reward_config.pk))
    page.click(".launch-form button[type=submit]")
    page.wait_for_url(f"{live_server_url}/runs/*/")
    run = Run.objects.get(name="sft from the form")
    assert run.method == "sft" and run.config["micro_batch_size"] == 4 and run.status == Run.Status.QUEUED
    # Its page shows no advantage or rectification chart.
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    assert page.locator(".chart-card[data-chart='rectified']").count() == 0
    assert page.locator(".chart-card[data-chart='loss']").count() == 1
    assert errors == []
