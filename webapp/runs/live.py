"""The Redis side of a run: live metric stream, cancel flag, heartbeat (docs/INTERFACES.md)."""
from __future__ import annotations

import json
from functools import lru_cache

import redis
from django.conf import settings

STREAM_MAXLEN = 10_000


def stream_key(run_id: int) -> str:
    return f"run:{run_id}:metrics"


def team_stream_key(team_id: int) -> str:
    """A team's stream of new runs ({"event": {"created": run id}}): the run table inserts their rows."""
    return f"team:{team_id}:runs"


def cancel_key(run_id: int) -> str:
    return f"run:{run_id}:cancel"


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def publish_event(run_id: int, payload: dict) -> None:
    """Add a lifecycle event (status change, ...) to the run's stream; live pages react to it."""
    client().xadd(stream_key(run_id), {"event": json.dumps(payload)}, maxlen=STREAM_MAXLEN, approximate=True)


def announce_new_run(team_id: int, run_id: int) -> None:
    """Tell the team's open run tables that a run was created (after the launch commits)."""
    client().xadd(team_stream_key(team_id), {"event": json.dumps({"created": run_id})}, maxlen=1000, approximate=True)
