"""End-to-end fixtures: the small model + toy data (built once per session), a validated dataset
and reward config per test, and a real Celery worker started on an empty broker queue."""
from __future__ import annotations

import pytest

from tests.conftest import start_worker
from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401


def purge_queues() -> None:
    """Drop task messages left by earlier tests, so a new worker starts with this test's runs."""
    from workers.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.client.delete("gpu", "default", "unacked", "unacked_index")


@pytest.fixture
def worker(transactional_db, tmp_path):
    purge_queues()
    proc = start_worker(tmp_path)
    yield proc
    proc.stop()
