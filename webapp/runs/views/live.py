"""Server-Sent Events: a run's Redis Stream, live, to the run and compare pages.

An async view (served by uvicorn under ASGI): each open page holds one coroutine blocked in
XREAD, not a thread. The client resumes after a reconnect from the Last-Event-ID its EventSource
sends (or ?last_id= on the first connection, the stream position that came with the history).

Access is checked again every SSE_RECHECK_S seconds while the stream is open: a user who logged
out (the session is gone), whose password changed, who was deactivated or removed from the run's
team stops receiving events within that time (the stream ends; the browser's reconnect is then
refused).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from importlib import import_module
from types import SimpleNamespace

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from django.contrib.auth import get_user

from webapp.accounts.scoping import get_scoped, scoped, user_teams

from .. import live
from ..models import Run

log = logging.getLogger(__name__)
_STREAM_ID = re.compile(r"^\d+-\d+$")
RETRY_MS = 3000
BLOCK_MS = int(getattr(settings, "SSE_BLOCK_MS", 15_000))  # also the keep-alive period
RECHECK_S = float(settings.SSE_RECHECK_S)  # how often access is checked again


def _start_id(request: HttpRequest) -> str:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_id") or ""
    return raw if _STREAM_ID.match(raw) else "$"


def _message(entry_id: str, fields: dict[bytes, bytes]) -> str:
    if b"data" in fields:
        kind, payload = "metrics", fields[b"data"].decode()
    elif b"event" in fields:
        kind, payload = "status", fields[b"event"].decode()
    else:
        kind, payload = "other", json.dumps({k.decode(): v.decode() for k, v in fields.items()})
    # One line of data: the payload is compact JSON; newlines would split it into SSE lines.
    payload = payload.replace("\n", " ")
    return f"id: {entry_id}\nevent: {kind}\ndata: {payload}\n\n"


def _release_connection() -> None:
    """An open stream lasts minutes to hours and must not hold one of Postgres' few connections."""
    if not connection.in_atomic_block:  # inside a transaction (a test's), the connection is not ours
        connection.close()


def _authorized_run(user, pk: int) -> Run:
    """The run if the user may see it (another team's: 404); the database connection is closed."""
    try:
        return get_scoped(user, Run.objects.all(), pk=pk)
    finally:
        _release_connection()


def _still_authorized(session_key: str | None, user_pk: int, run_pk: int | list[int], team_id: int | None = None) -> bool:
    """Whether the stream's session still belongs to the same active user, and that user still
    sees the run (and is still in team `team_id`, when given: the run table's new runs). Reads the
    session afresh: logging out deletes it, a password change voids it."""
    try:
        if not session_key:
            return False
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_user(SimpleNamespace(session=session))
        if not user.is_authenticated or user.pk != user_pk:
            return False
        if team_id is not None and not user_teams(user).filter(pk=team_id).exists():
            return False
        ids = run_pk if isinstance(run_pk, list) else [run_pk]  # the run table follows several
        return scoped(user, Run.objects.filter(pk__in=ids)).count() == len(set(ids))
    finally:
        _release_connection()


async def stream(request: HttpRequest, pk: int) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    run = await sync_to_async(_authorized_run)(user, pk)  # another team: 404
    session_key = request.session.session_key
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    key = live.stream_key(run.pk)
    cursor = _start_id(request)
    try:
        if cursor == "$":  # resolve "$" once: XREAD from "$" again would skip entries between reads
            newest = await client.xrevrange(key, count=1)
            cursor = newest[0][0].decode() if newest else "0-0"
    except Exception as exc:  # noqa: BLE001 - Redis down: tell the page to poll instead
        await client.aclose()
        log.warning("live stream of run %s unavailable: %s", run.pk, exc)
        return HttpResponse("live stream unavailable", status=503, content_type="text/plain")

    async def events():
        nonlocal cursor
        try:
            yield f"retry: {RETRY_MS}\n: stream of run {run.pk} from {cursor}\n\n"
            checked = time.monotonic()
            while True:
                if time.monotonic() - checked >= RECHECK_S:
                    if not await sync_to_async(_still_authorized)(session_key, user.pk, run.pk):
                        log.info("stream of run %s closed: %s no longer has access", run.pk, user)
                        yield "event: closed\ndata: access ended\n\n"
                        return
                    checked = time.monotonic()
                # Block at most until the next access check is due.
                block = max(1, min(BLOCK_MS, int((RECHECK_S - (time.monotonic() - checked)) * 1000)))
                reply = await client.xread({key: cursor}, block=block, count=500)
                if not reply:
                    yield ": keep-alive\n\n"  # also lets proxies and the server notice a gone client
                    continue
                for _, entries in reply:
                    for entry_id, fields in entries:
                        cursor = entry_id.decode()
                        yield _message(cursor, fields)
        except asyncio.CancelledError:
            log.debug("client left the stream of run %s at %s", run.pk, cursor)
            raise
        except Exception as exc:  # noqa: BLE001 - Redis went away: end; the browser reconnects with Last-Event-ID
            log.warning("live stream of run %s ended: %s", run.pk, exc)
        finally:
            await client.aclose()

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx must not buffer an endless response
    return response
