"""Sending work to the Celery workers by task name: the web app never imports `workers`.

`celery_config()` is the one Celery configuration; `workers/celery.py` builds the worker app from
it and `app()` here builds a producer-only app from it, so both agree on the broker and its
transport options. `send()` publishes a task once the current transaction commits.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

# Task names: the contract between the web app and workers/ (tasks are registered under these).
TRAIN_RUN = "workers.tasks.train_run"
HOUSEKEEPING = "workers.tasks.housekeeping"
VALIDATE_DATASET = "workers.data_tasks.validate_dataset"
TEST_REWARD = "workers.data_tasks.test_reward"
EVALUATE = "workers.eval_tasks.evaluate"  # on the first training queue (webapp.evaluations.services)
DELIVER_ALERT = "workers.alert_tasks.deliver_alert"  # default queue: a slow webhook never waits in training
GENERATE_TEACHERS = "workers.teacher_tasks.generate_teachers"  # first training queue (webapp.datasets.teachers)

# With a Redis broker an unacknowledged message is delivered again after this timeout: it must
# exceed any run (see workers/celery.py for why the Run row, not the broker, owns recovery).
VISIBILITY_TIMEOUT_S = 30 * 24 * 3600

# Housekeeping (every 15 s, from beat) has a queue and a small worker of its own, so it never
# waits behind a training run or a long dataset validation.
HOUSEKEEPING_QUEUE = "housekeeping"


def celery_config() -> dict[str, Any]:
    from kombu import Queue

    return dict(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.DEFAULT_QUEUE,
        task_queues=[Queue(q) for q in (settings.DEFAULT_QUEUE, *settings.TRAINING_QUEUES, HOUSEKEEPING_QUEUE)],
        task_routes={TRAIN_RUN: {"queue": settings.TRAINING_QUEUES[0]}, EVALUATE: {"queue": settings.TRAINING_QUEUES[0]},
                     GENERATE_TEACHERS: {"queue": settings.TRAINING_QUEUES[0]},
                     HOUSEKEEPING: {"queue": HOUSEKEEPING_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_ignore_result=True,
        task_track_started=False,
        worker_prefetch_multiplier=1,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )


_app = None


def app():
    """A producer-only Celery app (no task modules imported), built once per process."""
    global _app
    if _app is None:
        from celery import Celery

        _app = Celery("gft_studio", set_as_current=False)
        _app.conf.update(celery_config())
    return _app


def send(name: str, args: list, *, queue: str | None = None, task_id: str | None = None,
         on_error: Callable[[Exception], None] | None = None) -> None:
    """Publish task `name` once the current transaction commits (at once outside one).

    A broker that cannot be reached is logged and handed to `on_error` (which records why the
    work cannot start) instead of raising into the request that asked for it.
    """
    def publish() -> None:
        try:
            app().send_task(name, args=args, queue=queue or settings.DEFAULT_QUEUE, task_id=task_id)
        except Exception as exc:  # noqa: BLE001 - broker down: the caller's row says so
            log.exception("could not queue %s%r", name, args)
            if on_error is not None:
                on_error(exc)

    transaction.on_commit(publish)
