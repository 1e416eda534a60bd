"""End-to-end fixtures: the small model + toy data (built once per session), a validated dataset
and reward config per test. The real Celery worker is tests/conftest.py's `celery_worker`."""
from __future__ import annotations

from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
