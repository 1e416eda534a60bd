"""Evaluations end to end (issue 17): a real Celery worker trains a short run on the small model,
then evaluates its checkpoint on a small benchmark (8 toy problems, k=2) through gft_core's
evaluate_benchmark; results and progress land in Postgres; a cancel stops an evaluation between
two batches."""
from __future__ import annotations

import pytest

from tests.eval_support import benchmark, make_benchmark, suite  # noqa: F401
from tests.runs_support import wait_for
from webapp.evaluations import services
from webapp.evaluations.models import EvalResult, Evaluation
from webapp.runs import launch
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def ev_state(pk: int) -> Evaluation:
    return Evaluation.objects.get(pk=pk)


def trained_run(team, user, launch_inputs, celery_worker) -> Run:
    run = launch.submit_run(team, user, {**launch_inputs, "max_steps": 2, "checkpoint_interval": 1})
    wait_for(lambda: Run.objects.get(pk=run.pk).status in Run.FINISHED, timeout=240, what="the run",
             on_timeout=celery_worker.log)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return run


def test_a_worker_evaluates_a_run_checkpoint(celery_worker, team, user, launch_inputs, suite):  # noqa: F811
    run = trained_run(team, user, launch_inputs, celery_worker)
    ev = services.submit_evaluation(team, user, suite=suite, run=run, step="latest")
    assert ev.checkpoint_step == 2 and ev.total == 8
    e = wait_for(lambda: ev_state(ev.pk).status in Evaluation.FINISHED and ev_state(ev.pk), timeout=240,
                 what="the evaluation", on_timeout=celery_worker.log)
    assert e.status == "succeeded", e.error + celery_worker.log()[-3000:]
    # progress: every problem counted (the cancel test below sees it move batch by batch)
    assert (e.done, e.total, e.attempt) == (8, 8, 1) and e.started_at and e.finished_at
    res = EvalResult.objects.get(evaluation=e)
    assert res.benchmark_id == suite.benchmarks[0] and res.benchmark_name == "toy_bench"
    m = res.metrics
    assert m["n_problems"] == 8 and m["k"] == 2 and 0.0 <= m["avg_at_k"] <= 1.0
    assert set(m["pass_at_k"]) == {"1", "2"} and "maj_at_k" in m and "truncation_rate" in m
    assert len(res.problems) == 8 and all(p["k"] == 2 and len(p["responses"]) == 2 for p in res.problems)
    assert {p["index"] for p in res.problems} == set(range(8))
    # built with the run's prompt format (chat template on; the tiny model has none: plain prompts)
    assert m["prompt_format"] == {"use_chat_template": True, "system_prompt": "", "instruction_suffix": "",
                                  "chat_template_applied": False}
    assert e.prompt_format == {**m["prompt_format"], "source": f"run #{run.pk}", "set_by_suite": [], "set_by_request": []}

    # the run's accuracy series has the checkpoint's point
    from webapp.evaluations.selectors import accuracy_series

    assert [s for s, _ in accuracy_series(run, suite)["toy_bench"]] == [2]


def test_cancel_stops_a_running_evaluation(celery_worker, team, user, tiny_assets):
    big = make_benchmark(team, tiny_assets, name="long_bench", n=2000)
    s = services.create_suite(team, user, name="long", benchmarks=[big.pk],
                              settings={"k": 2, "max_new_tokens": 8, "batch_size": 1, "max_prompt_len": 48})
    ev = services.submit_evaluation(team, user, suite=s, model=str(tiny_assets["model"]))
    wait_for(lambda: ev_state(ev.pk).done >= 2, timeout=240, what="two batches", on_timeout=celery_worker.log)
    services.request_cancel(ev_state(ev.pk))
    e = wait_for(lambda: ev_state(ev.pk).status in Evaluation.FINISHED and ev_state(ev.pk), timeout=120,
                 what="the cancel", on_timeout=celery_worker.log)
    assert e.status == "cancelled" and e.done < e.total == 2000 and not e.cancel_requested
    assert not EvalResult.objects.filter(evaluation=e).exists()
    resumed = services.resume_evaluation(e)
    assert resumed.status == "queued" and resumed.done == e.done
    services.request_cancel(resumed)  # still queued (or just started): ends without finishing
    wait_for(lambda: ev_state(ev.pk).status == "cancelled", timeout=120, what="the second cancel",
             on_timeout=celery_worker.log)


def test_a_run_evaluates_its_suite_during_training(celery_worker, team, user, launch_inputs, tiny_assets):
    """Issue 17 3(a): a run launched with an eval suite evaluates it on its own worker at every
    eval_interval step and at the end; the results are Evaluations of the run at those steps."""
    from webapp.evaluations.selectors import accuracy_series

    bench = make_benchmark(team, tiny_assets, name="toy4", n=4)
    s = services.create_suite(team, user, name="in training", benchmarks=[bench.pk],
                              settings={"k": 2, "max_new_tokens": 8, "temperature": 1.0, "batch_size": 4,
                                        "max_prompt_len": 48})
    run = launch.submit_run(team, user, {**launch_inputs, "max_steps": 3, "eval_interval": 2, "eval_suite": s.pk,
                                              "eval_split": "dataset"})
    wait_for(lambda: Run.objects.get(pk=run.pk).status in Run.FINISHED, timeout=240, what="the run",
             on_timeout=celery_worker.log)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error + celery_worker.log()[-3000:]
    evs = list(Evaluation.objects.filter(run=run, suite=s).order_by("checkpoint_step"))
    assert [(e.checkpoint_step, e.status, e.done, e.total) for e in evs] == [(2, "succeeded", 4, 4), (3, "succeeded", 4, 4)]
    for e in evs:
        res = EvalResult.objects.get(evaluation=e)
        assert res.benchmark_id == bench.pk and res.metrics["n_problems"] == 4 and res.metrics["k"] == 2
        assert len(res.problems) == 4 and all(p["k"] == 2 for p in res.problems)
        assert e.prompt_format == {**res.metrics["prompt_format"], "source": f"run #{run.pk} (during training)"}
        assert e.prompt_format["use_chat_template"] is True and e.prompt_format["chat_template_applied"] is False
    assert [step for step, _ in accuracy_series(run, s)["toy4"]] == [2, 3]
    assert "eval/accuracy" in run.summary  # the held-out accuracy metric is kept as it was


def test_sigterm_requeues_a_running_evaluation(team, user, tiny_assets):
    """A worker shutdown (SIGTERM, forwarded to the process evaluating, as for runs) stops the
    evaluation after its current batch and queues it again with a new task. The task body runs
    in this process and the signal is a real one, sent once a batch is scored."""
    import os
    import signal
    import threading

    from django.db import connection

    from tests.conftest import purge_queues
    from webapp.runs.housekeeping import broker_task_ids
    from workers.eval_tasks import EvalExecution

    bench = make_benchmark(team, tiny_assets, name="sig_bench", n=40)
    s = services.create_suite(team, user, name="sig", benchmarks=[bench.pk],
                              settings={"k": 2, "max_new_tokens": 8, "batch_size": 1, "max_prompt_len": 48})
    ev = services.submit_evaluation(team, user, suite=s, model=str(tiny_assets["model"]))
    first_task = ev.celery_task_id
    running = services.start(ev.pk, first_task, "here")

    def stop_when_scoring() -> None:
        try:
            wait_for(lambda: ev_state(ev.pk).done >= 1, timeout=120, what="a scored batch")
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            connection.close()

    outside = signal.signal(signal.SIGTERM, lambda *_: None)  # what the signal does outside the attempt
    sender = threading.Thread(target=stop_when_scoring, daemon=True)
    sender.start()
    try:
        outcome = EvalExecution(running).execute()
    finally:
        sender.join(timeout=130)
        signal.signal(signal.SIGTERM, outside)
    e = ev_state(ev.pk)
    assert outcome == "requeued" and e.status == "queued", (outcome, e.status, e.error)
    assert e.attempt == 1 and 1 <= e.done < e.total == 40 and not e.error
    assert e.celery_task_id != first_task and e.celery_task_id in broker_task_ids({"gpu"})
    purge_queues()
