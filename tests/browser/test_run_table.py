"""The run table in a real headless Chromium, served by uvicorn: a chosen config column, sort by a
header click, the filter kept in the URL, and a row's status following the run's live stream
(transitions made here with webapp.runs.services.transition, published to the real Redis). Then the
sweep and pipeline pages, live over the same stream: status, step, best so far, sweep status."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from tests.browser.support import SHOTS, log_steps, login, make_run, scalars, sink_for
from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.pipelines.models import Pipeline, PipelineStage
from webapp.runs.launch import submit_run
from webapp.runs.models import Run
from webapp.runs.services import transition
from webapp.sweeps import search
from webapp.sweeps.models import Sweep, SweepTrial
from webapp.sweeps.spaces import Param


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#run-table tbody tr td:nth-child(3) a", "els => els.map(e => e.textContent)")


def test_run_table_columns_sort_filter_and_live_status(live_server_url, chromium, team, user, launch_inputs):
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

    # A run launched after the page opened gets its row without a reload (the team's stream of new
    # runs), in the page's sort, ticks kept; then its row follows its status too.
    page.check(f"tr[data-run='{small.pk}'] input[name=run-select]")
    launched = submit_run(team, user, {**launch_inputs, "name": "launched-later"})
    page.wait_for_selector(f"tr[data-run='{launched.pk}'] .status.status-queued", timeout=20_000)
    assert _names(page)[-1] == "launched-later"  # lr 1e-3: last by config:lr ascending
    assert page.is_checked(f"tr[data-run='{small.pk}'] input[name=run-select]")
    transition(launched.pk, Run.Status.CANCELLED)
    page.wait_for_selector(f"tr[data-run='{launched.pk}'] .status.status-cancelled", timeout=20_000)
    assert page.evaluate("window.__noReload") == "still here"
    page.screenshot(path=str(SHOTS / "run-table.png"), full_page=True)
    assert not errors, errors


def _sweep(team, user, runs: list[Run]) -> Sweep:
    """A random search over tau whose whole budget is `runs` (asked of a real Optuna study)."""
    params = [Param("tau", "float", low=0.1, high=0.9)]
    study = search.create(f"sweep-live-{team.pk}", "max", "random", params, 0, len(runs), {})
    sweep = Sweep.objects.create(team=team, name="live tau", base={}, parameters={"tau": params[0].to_json()},
                                 strategy="random", max_runs=len(runs), parallel=len(runs), target="reward/mean",
                                 direction="max", asked=len(runs), study_name=study.study_name, created_by=user)
    for run in runs:
        trial = study.ask(search.distributions(params))
        SweepTrial.objects.create(sweep=sweep, run=run, number=trial.number, trial_id=trial._trial_id,
                                  params={"tau": run.config["tau"]})
    return sweep


def test_sweep_and_pipeline_pages_follow_their_runs_live(live_server_url, chromium, team, user):
    base = live_server_url
    first = make_run(team, user, "trial 0", 0.3, total=20)
    second = make_run(team, user, "trial 1", 0.7, status=Run.Status.QUEUED, total=20)
    sweep = _sweep(team, user, [first, second])
    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/sweeps/{sweep.pk}/")
    page.wait_for_selector("#live-note.live-sse", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    assert page.locator("#sweep-best").count() == 0

    # Steps through the real sink, a queued trial starting, a trial ending with its target.
    sink = sink_for(first, 0, 20)
    log_steps(sink, range(1, 6), 0.3)
    page.wait_for_function(f"() => document.querySelector('tr[data-run-state=\"{first.pk}\"] .step-text')"
                           ".textContent.includes('step 5')", timeout=20_000)
    transition(second.pk, Run.Status.RUNNING)
    page.wait_for_selector(f"tr[data-run-state='{second.pk}'] .status.status-running", timeout=20_000)
    Run.objects.filter(pk=first.pk).update(summary={"reward/mean": 0.42})
    transition(first.pk, Run.Status.SUCCEEDED)
    page.wait_for_selector("#sweep-best", timeout=20_000)
    assert f"run #{first.pk}" in page.inner_text("#sweep-best") and "0.4200" in page.inner_text("#sweep-best")
    assert "1 complete" in page.inner_text("#sweep-progress")
    page.wait_for_function("() => document.body.dataset.sweepDrawn === '1'", timeout=10_000)

    # The last trial ends: the sweep succeeds, the page says so and stops following.
    Run.objects.filter(pk=second.pk).update(summary={"reward/mean": 0.55})
    transition(second.pk, Run.Status.SUCCEEDED)
    page.wait_for_selector("#sweep-head .status-succeeded", timeout=20_000)
    page.wait_for_selector("#live-note.live-idle", timeout=10_000)
    assert f"run #{second.pk}" in page.inner_text("#sweep-best")
    assert page.evaluate("window.__noReload") == "still here"
    page.screenshot(path=str(SHOTS / "sweep-live.png"), full_page=True)

    # A one-stage pipeline: its stage row follows the run; the pipeline's end shows without a reload.
    stage_run = make_run(team, user, "stage 1", 0.3, status=Run.Status.QUEUED, total=20)
    pipeline = Pipeline.objects.create(team=team, name="live pipe", created_by=user)
    PipelineStage.objects.create(pipeline=pipeline, index=0, method="gft", inputs={}, run=stage_run)
    page.goto(f"{base}/pipelines/{pipeline.pk}/")
    page.wait_for_selector("#live-note.live-sse", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    transition(stage_run.pk, Run.Status.RUNNING)
    page.wait_for_selector("tr[data-stage='0'] .status.status-running", timeout=20_000)
    transition(stage_run.pk, Run.Status.SUCCEEDED)
    page.wait_for_selector(".pipeline-head .status-succeeded", timeout=20_000)
    assert "All 1 stages succeeded" in page.inner_text(".pipeline-head")
    assert page.evaluate("window.__noReload") == "still here"

    # The new-pipeline page runs the launch form's script per stage: SFT hides tau, GFT shows it.
    page.goto(f"{base}/pipelines/new/?methods=sft,gft")
    page.wait_for_selector(".field[data-field='tau'][hidden]", state="attached", timeout=10_000)
    tau = "[data-launch-prefix='{}-'] .field[data-field='tau']"
    assert page.locator(tau.format("s0")).is_hidden() and page.locator(tau.format("s1") + " input").count() == 1
    assert page.locator("[name=s1-model]").count() == 0  # later stages start from the previous model
    page.select_option("[name=s0-method]", "gft")
    page.wait_for_function(f"() => !document.querySelector(\"{tau.format('s0')}\").hidden", timeout=10_000)


def test_status_follows_the_run_everywhere(live_server_url, chromium, team, user, tiny_assets, toy_dataset,
                                           reward_config):
    """A run launched from the form, then trained through the worker's real metric sink: the
    "queued" message goes when it starts; run page head, actions and run table follow it to its end
    with no reload; nothing says queued or running after; a rectified share stuck near 1 shows the
    tau hint live."""
    base = live_server_url
    page = login(chromium, base, "alice", "alice-pass-123")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/runs/new/")
    page.fill("#id_name", "followed")
    page.fill("#id_model", "tiny-test")  # by name, under the model roots
    page.select_option("#id_dataset", str(toy_dataset.pk))
    page.select_option("#id_eval_split", "none")
    page.select_option("#id_reward_config", str(reward_config.pk))
    for field, value in {"n_expert": "1", "n_teacher": "1", "n_self": "2", "prompts_per_step": "2",
                         "micro_batch_size": "8", "max_steps": "4", "eval_interval": "0"}.items():
        page.fill(f"#id_{field}", value)
    page.click(".launch-form button[type=submit]")
    page.wait_for_url(f"{base}/runs/*/")
    run = Run.objects.get(name="followed")  # no worker here: it stays queued until this test starts it
    queued_note = f".messages li.run-queued-{run.pk}"
    assert page.inner_text(queued_note) == f"Run #{run.pk} is queued."
    page.wait_for_selector("body[data-charts-ready='1']", timeout=20_000)
    page.wait_for_selector(".live-note.live-sse", timeout=20_000)
    page.evaluate("window.__noReload = 'still here'")
    table = page.context.new_page()
    table.goto(f"{base}/")
    table.wait_for_selector("#live-note.live-sse", timeout=20_000)
    row = f"tr[data-run='{run.pk}']"
    # It starts, and trains four steps through the real sink with nearly every token rectified.
    assert page.locator(".run-head .device").is_hidden()  # not started: no device yet
    transition(run.pk, Run.Status.RUNNING, worker="w", event_data={"device": "CPU: Test CPU, 2 cores"})
    page.wait_for_selector(queued_note, state="detached", timeout=20_000)
    page.wait_for_selector(".run-head .device:not([hidden])", timeout=20_000)  # named by the start event
    assert page.inner_text(".run-head .device") == "on CPU: Test CPU, 2 cores"
    assert page.locator(".run-head .cancel-run").is_visible()
    sink = sink_for(run, 0, 4)
    try:
        for step in range(1, 5):
            sink.log(step, {**scalars(step, 0.5), "dcr/rectified_frac": 0.99}, {})
            sink.flush()
    finally:
        sink.close()
    page.wait_for_selector(".run-head .tau-hint:not([hidden])", timeout=20_000)
    assert "99% of the tokens are rectified" in page.inner_text(".run-head .tau-hint")
    page.wait_for_function("() => document.querySelector('.run-head .step-text').textContent === 'step 4 / 4 (100%)'",
                           timeout=20_000)
    table.wait_for_function(f"() => document.querySelector(\"{row} .step-text\").textContent.startsWith('step 4 / 4')",
                            timeout=20_000)

    # It ends: everything follows.
    transition(run.pk, Run.Status.SUCCEEDED)
    page.wait_for_selector(".run-head .status.status-succeeded", timeout=20_000)
    table.wait_for_selector(f"{row} .status.status-succeeded", timeout=20_000)
    assert page.locator(".run-head .cancel-run").is_hidden()
    assert page.locator(".run-head .continue-run").is_visible()
    assert page.get_attribute(".run-head .delete-run", "hidden") is None
    head = page.inner_text(".run-head").lower()
    assert "queued" not in head and "running" not in head and "eta" not in head.split()
    assert page.locator(".messages").count() == 0
    assert "running" not in table.inner_text(row).lower() and table.inner_text(f"{row} .eta") == ""
    assert table.inner_text(f"{row} .step-text") == "step 4 / 4 (100%)"
    assert page.evaluate("window.__noReload") == "still here"
    page.screenshot(path=str(SHOTS / "run-followed-to-its-end.png"), full_page=True)
    assert not errors, errors
