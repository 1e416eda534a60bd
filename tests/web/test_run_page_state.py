"""The run page's head: queue position of a queued run, ETA of a running one (both also in the
state the page's JavaScript polls), links to the exact dataset and reward versions, clone."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.metric_support import write_series
from tests.runs_support import reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs import progress
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def make_run(team, user, name: str, **fields) -> Run:
    return Run.objects.create(team=team, created_by=user, name=name, method="gft", config={"tau": 0.5}, **fields)


def text(html: str) -> str:
    """The visible words of a page, tags dropped, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def state_json(client, run: Run) -> dict:
    """The state the run page polls (the metrics JSON, no keys)."""
    resp = client.get(reverse("runs:series"), {"runs": str(run.pk), "keys": ""})
    assert resp.status_code == 200
    return resp.json()["runs"][str(run.pk)]


def test_queued_run_shows_its_queue_position(auth_client, team, user):
    now = timezone.now()
    first = make_run(team, user, "first", status=Run.Status.QUEUED, queued_at=now - timedelta(seconds=30))
    second = make_run(team, user, "second", status=Run.Status.QUEUED, queued_at=now)
    make_run(team, user, "elsewhere", status=Run.Status.QUEUED, queued_at=now - timedelta(seconds=60), queue="cpu")

    page = text(auth_client.get(reverse("runs:detail", args=[second.pk])).content.decode())
    assert "queue position 2 on gpu" in page
    assert state_json(auth_client, second)["queue_position"] == 2

    from webapp.runs.services import request_cancel

    request_cancel(first)  # the run ahead leaves the queue: the polled state moves up
    assert state_json(auth_client, second)["queue_position"] == 1
    assert state_json(auth_client, first)["queue_position"] is None
    html = auth_client.get(reverse("runs:detail", args=[first.pk])).content.decode()
    assert re.search(r'<span class="queue-pos" hidden>', html)


def test_running_run_shows_the_eta_from_its_recent_steps(auth_client, team, user):
    started = timezone.now() - timedelta(minutes=5)
    run = make_run(team, user, "running", status=Run.Status.RUNNING, started_at=started, attempt=2, step=40,
                   total_steps=100)
    t0 = started.timestamp()
    # Steps 1..30 were timed in an earlier attempt (before this start); 31..40 take 2 s each now.
    write_series(run, "loss", range(1, 31), [1.0] * 30, walls=[t0 - 86_400 + s for s in range(1, 31)])
    write_series(run, "loss", range(31, 41), [1.0] * 10, walls=[t0 + 2.0 * s for s in range(31, 41)])

    assert progress.eta_seconds(run) == pytest.approx(2.0 * 60)
    assert state_json(auth_client, run)["eta_s"] == pytest.approx(120.0)
    assert state_json(auth_client, run)["queue_position"] is None
    page = text(auth_client.get(reverse("runs:detail", args=[run.pk])).content.decode())
    assert "ETA 2m 0s" in page


def test_run_page_links_the_dataset_and_reward_versions_it_used(auth_client, team, user, toy_dataset,
                                                                  reward_config):
    run = make_run(team, user, "linked", status=Run.Status.SUCCEEDED, dataset=toy_dataset,
                   reward_config=reward_config)
    html = auth_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    dataset_url = reverse("datasets:detail", args=[toy_dataset.pk])
    reward_url = reverse("rewards:detail", args=[reward_config.pk])
    assert f'href="{dataset_url}"' in html and f'href="{reward_url}"' in html
    assert f'href="{reverse("runs:launch")}?clone={run.pk}"' in html
    # The links lead to the pages of those versions.
    assert f"{toy_dataset.name}" in auth_client.get(dataset_url).content.decode()
    assert auth_client.get(reward_url).status_code == 200


def test_tau_hint_when_the_rectified_share_stays_near_one(auth_client, team, user):
    """Nearly every token rectified, step after step: tau changes nothing, and the page says so."""
    from tests.metric_support import write_step

    stuck = make_run(team, user, "cold model", status=Run.Status.RUNNING, total_steps=10)
    fine = make_run(team, user, "warm model", status=Run.Status.RUNNING, total_steps=10)
    for step in (1, 2, 3, 4):
        write_step(stuck, step, {"dcr/rectified_frac": 0.99 - 0.01 * (step == 4)}, publish=False)
        write_step(fine, step, {"dcr/rectified_frac": 0.99 if step < 4 else 0.4}, publish=False)
    hint = re.compile(r'<p class="tau-hint warn"( hidden)?>')
    page = auth_client.get(reverse("runs:detail", args=[stuck.pk])).content.decode()
    assert hint.search(page).group(1) is None  # shown
    assert "tau has no effect here: 98% of the tokens are rectified" in text(page)
    page = auth_client.get(reverse("runs:detail", args=[fine.pk])).content.decode()
    assert hint.search(page).group(1) == " hidden"  # the last step is not near 1: no hint (kept for live updates)
