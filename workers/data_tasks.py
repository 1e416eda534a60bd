"""Default-queue tasks for datasets and rewards: thin entry points.

The work lives in the apps (webapp.datasets.validation, webapp.rewards.testing); these tasks only
give it a name, a queue and time limits. The web app sends them by name (webapp.dispatch).
"""
from __future__ import annotations

# First: the project's app (not shared_task), which also sets Django up before the models load.
from workers.celery import app  # isort: skip

from webapp.datasets import validation
# Still imported from here by housekeeping (workers.tasks); its home is webapp.datasets.validation.
from webapp.datasets.validation import fail_stale_validations  # noqa: F401
from webapp.dispatch import TEST_REWARD, VALIDATE_DATASET
from webapp.rewards import testing


@app.task(name=VALIDATE_DATASET, soft_time_limit=validation.VALIDATION_SOFT_TIME_LIMIT_S,
          time_limit=validation.VALIDATION_TIME_LIMIT_S)
def validate_dataset(dataset_id: int) -> str:
    """Read every row of a dataset (and its eval file) and store the report; status valid/invalid."""
    return validation.validate(dataset_id)


@app.task(name=TEST_REWARD, soft_time_limit=testing.TEST_SOFT_TIME_LIMIT_S, time_limit=testing.TEST_TIME_LIMIT_S)
def test_reward(test_id: int) -> str:
    """Fill a RewardTest: sample the dataset, score expert/teacher answers and the pasted response."""
    return testing.run_test(test_id)
