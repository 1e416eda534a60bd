"""Start-up checks: say clearly which service is unreachable, at which URL, instead of a stack trace."""
from __future__ import annotations

import re

import psycopg
import redis


class ServiceUnavailable(RuntimeError):
    """Postgres or Redis cannot be reached; the message names the URL."""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def check_postgres(url: str, timeout: float = 3.0, *, label: str | None = None) -> None:
    """Connect once; `label` is the URL to name in the message (default: `url`)."""
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise ServiceUnavailable(f"Cannot reach Postgres at {redact(label or url)}: {reason}") from None


def check_redis(url: str, timeout: float = 3.0) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Cannot reach Redis at {redact(url)}: {exc}") from None


def check_all() -> None:
    """Check the services Django is configured with (DATABASE_URL, CELERY_BROKER_URL)."""
    from django.conf import settings

    check_postgres(settings.DATABASE_URL)
    check_redis(settings.CELERY_BROKER_URL)
