"""The Celery app: the bridge between the dashboard and the trainer.

Queues
- `gpu`: training runs. Start one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES:
  `celery -A workers worker -Q gpu --concurrency 1 --prefetch-multiplier 1 --max-tasks-per-child 1`.
- `default`: dataset validation and reward tests (minutes for a large dataset).
- `housekeeping`: the 15-second housekeeping from beat, on a small worker of its own
  (`-Q housekeeping --pool solo`) so it never waits behind the other two.

Choices for multi-hour GPU jobs, made on purpose:
- prefetch 1 and concurrency 1 on the gpu queue: a worker holds exactly the run it trains, so a
  queued run waits in Redis (where its queue position can be read) instead of in a busy worker.
- late ack: a run's message is acknowledged when the task returns, so a worker that dies before
  it starts a run does not lose it.
- visibility timeout of 30 days (webapp.dispatch, where the one Celery configuration lives), above any run: with a Redis broker an unacknowledged message is
  delivered again after this timeout, and a run must never be started twice by the broker. When a
  worker dies mid-run, the run's heartbeat stops and housekeeping marks it failed within a minute;
  the user resumes it from its last checkpoint. The Run row, not the broker, owns recovery, and
  `train_run` refuses to start a run that is not queued, so a late redelivery is harmless.
- max tasks per child 1: each run gets a fresh process, which frees the CUDA context and all
  memory; the parent process never touches CUDA.
- results are ignored: the Run row and the metrics tables are the results.
"""
from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from webapp.dispatch import HOUSEKEEPING, celery_config  # noqa: E402

app = Celery("gft_studio")
app.conf.update(
    celery_config(),
    beat_schedule={"fail-runs-without-heartbeat": {"task": HOUSEKEEPING, "schedule": 15.0}},
)
# Training and housekeeping (workers.tasks); dataset validation and reward tests (workers.data_tasks);
# benchmark evaluations (workers.eval_tasks).
app.conf.include = ["workers.tasks", "workers.data_tasks", "workers.eval_tasks", "workers.alert_tasks",
                    "workers.teacher_tasks"]


@signals.worker_init.connect
def _check_services(**_) -> None:
    """Refuse to start, with one clear line, when Postgres or Redis is unreachable."""
    import sys

    from stack.preflight import ServiceUnavailable, check_all

    try:
        check_all()
    except ServiceUnavailable as exc:
        print(f"gft-studio worker: {exc}", file=sys.stderr, flush=True)
        os._exit(1)


@signals.celeryd_after_setup.connect
def _device_heartbeat_setup(sender: str, instance, **_) -> None:
    """The worker's device heartbeat (workers/devices.py): its hostname and queues, before it starts."""
    from workers import devices

    queues = instance.app.amqp.queues
    devices.remember(sender, sorted(queues.consume_from or queues))


@signals.worker_ready.connect
def _device_heartbeat_start(**_) -> None:
    from workers import devices

    devices.start()


@signals.worker_shutdown.connect
def _device_heartbeat_stop(**_) -> None:
    from workers import devices

    devices.stop()
