"""Test environment, loaded as a plugin (`-p tests.pytest_env`) before pytest-django reads settings.

- Redis database 15 (or TEST_REDIS_DB) of whatever server REDIS_URL names, flushed at the start, so
  tests never touch a running dev stack (database 0); with TEST_DATABASE_NAME, two suites can run
  side by side on one machine;
- a temporary ARTIFACT_ROOT and MODEL_ROOTS.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

TMP = Path(tempfile.mkdtemp(prefix="gft-tests-"))

os.environ.setdefault("SECRET_KEY", "tests-only-secret")
os.environ["REDIS_URL"] = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))._replace(path=f"/{os.environ.get('TEST_REDIS_DB', '15')}").geturl()
os.environ["CELERY_BROKER_URL"] = os.environ["REDIS_URL"]
os.environ.setdefault("ARTIFACT_ROOT", str(TMP / "artifacts"))
os.environ.setdefault("MODEL_ROOTS", str(TMP / "models"))
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["TEST_FAST_PASSWORD_HASHER"] = "1"  # MD5: users and logins cost microseconds, not ~0.5 s each
os.environ.setdefault("SYSTEM_METRICS_INTERVAL_S", "0.5")  # the workers' runs of a few steps get samples
os.environ.setdefault("ALERT_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")  # the alert tests' local webhook receiver
