"""The run table (webapp.runs.listing), its bulk actions, its live feed, and the after-launch edits
of a run (name, tags, notes; archive; delete). Thin: listing reads, services write."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.accounts.scoping import get_scoped, in_team, require_writer, scoped, user_teams

from .. import live, services
from ..listing import ARCHIVED, PAGE_SIZES, column_choices, filter_choices, parse_id, run_table
from ..models import Run
from .live import BLOCK_MS, RECHECK_S, RETRY_MS, _release_connection, _still_authorized
from .pages import MAX_COMPARE, parse_run_ids

log = logging.getLogger(__name__)
MAX_LIVE_RUNS = 200  # the largest page
BULK_ACTIONS = ("tag", "archive", "unarchive", "cancel")
_CURSOR = re.compile(r"^(t?\d+):(\d+-\d+)$")  # "<run id>:<entry>" or "t<team id>:<entry>"


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    team_runs = in_team(request.user, Run.objects.all(), request.team)
    table = run_table(team_runs, request.GET, request.GET.get("page", 1))
    rows = list(table.page.object_list)
    active = [r.pk for r in rows if r.is_active]
    positions = _positions(active)
    # The rows' states read again after the stream positions: a run that ended in between is
    # shown ended (the feed starts after its end event and would never tell).
    fresh = {pk: (status, step, total) for pk, status, step, total in
             Run.objects.filter(pk__in=active).values_list("pk", "status", "step", "total_steps")}
    for r in rows:
        if r.pk in fresh:
            r.status, r.step, r.total_steps = fresh[r.pk]
    active = [r.pk for r in rows if r.is_active]
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "runs/list.html", {
        "table": table, "filter": table.filter, "page_obj": table.page, "columns": table.columns,
        "headers": _headers(request, table), "column_links": _column_links(request, table),
        "column_choices": column_choices(request.team), "choices": filter_choices(team_runs, request.team),
        "statuses": Run.Status.choices, "archived_choices": ARCHIVED, "page_sizes": PAGE_SIZES,
        "max_compare": MAX_COMPARE, "launch_url": reverse("runs:launch"), "query": query.urlencode(),
        "run_url_prefix": reverse("runs:detail", args=[0])[:-2],  # rows link to prefix + id + "/"
        "live": {"url": reverse("runs:table_stream"), "series_url": reverse("runs:series"), "runs": active,
                 "positions": {k: v for k, v in positions.items() if int(k) in active},
                 **_team_position(request.team)},
    })


BASE_HEADERS = (("#", "id"), ("Name", "name"), ("Method", None), ("Status", "status"), ("Progress", "step"),
                ("Tags", None), ("By", None))


def _url(request: HttpRequest, **changes: str) -> str:
    """This page's URL with some parameters changed (and back on page 1)."""
    query = request.GET.copy()
    query.pop("page", None)
    for k, v in changes.items():
        query[k] = v
    return f"{request.path}?{query.urlencode()}"


def _headers(request: HttpRequest, table) -> list[dict]:
    """Each column header: its label, and the URL that sorts by it (descending first; again: flipped)."""
    flt = table.filter
    cols = [(label, key) for label, key in BASE_HEADERS] + [(c.label, c.spec) for c in table.columns] + [
        ("Created", "created")]
    out = []
    for label, key in cols:
        current = key is not None and flt.sort == key
        out.append({"label": label, "key": key, "current": current, "desc": flt.desc,
                    "url": _url(request, sort=key, dir="asc" if current and flt.desc else "desc") if key else None})
    return out


def _column_links(request: HttpRequest, table) -> list[dict]:
    """The chosen columns with the URL that removes each."""
    specs = [c.spec for c in table.columns]
    return [{"spec": s, "remove": _url(request, cols=",".join(x for x in specs if x != s))} for s in specs]


def live_follow(run_ids: list[int], pending: bool = False) -> dict:
    """What a page that follows some runs over table_stream needs (static/js/live_sections.js):
    the stream's URL, the active runs, their stream positions read now, and `pending` (the page's
    sweep or pipeline is about to launch a run: the page re-reads itself until it appears)."""
    return {"url": reverse("runs:table_stream"), "runs": run_ids, "positions": _positions(run_ids), "pending": pending}


def _team_position(team) -> dict:
    """{"team": id, "team_position": newest entry of its stream of new runs} (read with the page: a
    run launched after it is announced to the table); {} without a team or Redis."""
    if team is None:
        return {}
    try:
        newest = live.client().xrevrange(live.team_stream_key(team.pk), count=1)
    except Exception as exc:  # noqa: BLE001 - Redis down: new runs show on the next load
        log.warning("team stream position unavailable: %s", exc)
        return {}
    return {"team": team.pk, "team_position": newest[0][0].decode() if newest else "0-0"}


def _positions(run_ids: list[int]) -> dict[str, str]:
    """Newest entry of each run's stream, read with the page (one Redis round trip); the live feed
    starts after them, so no status change between the page's query and the feed is lost."""
    if not run_ids:
        return {}
    try:
        pipe = live.client().pipeline(transaction=False)
        for run_id in run_ids:
            pipe.xrevrange(live.stream_key(run_id), count=1)
        newest = pipe.execute()
    except Exception as exc:  # Redis down: the table is static; the page says so
        log.warning("stream positions unavailable: %s", exc)
        return {}
    return {str(i): (e[0][0].decode() if e else "0-0") for i, e in zip(run_ids, newest)}


@login_required
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    """Tag, archive, restore or cancel the ticked runs of the current team; each run's failure
    (not allowed, already finished) is reported and the others still act."""
    action = request.POST.get("action", "")
    back = request.POST.get("next", "")
    back = back if back.startswith("/") and not back.startswith("//") else reverse("runs:list")
    if action not in BULK_ACTIONS:
        messages.error(request, f"Unknown action {action[:30]!r}.")
        return redirect(back)
    ids = parse_run_ids(",".join(request.POST.getlist("runs")), limit=MAX_LIVE_RUNS)
    runs = list(in_team(request.user, Run.objects.select_related("team"), request.team).filter(pk__in=ids))
    if not runs:
        messages.error(request, "Tick at least one run.")
        return redirect(back)
    require_writer(request.user, runs[0].team)
    done, failed = 0, []
    for run in runs:
        try:
            if action == "tag":
                done += services.add_tags([run], request.user, [t for t in request.POST.get("tags", "").split(",")])
            elif action in ("archive", "unarchive"):
                services.archive_run(run, request.user, action == "archive")
                done += 1
            else:
                services.request_cancel(run, by=request.user.get_username())
                done += 1
        except (PermissionDenied, services.RunActiveError, services.TransitionError, services.RunEditError) as e:
            failed.append(f"#{run.pk}: {e}")
    messages.success(request, f"{action}: {done} of {len(runs)} runs.")
    for line in failed[:10]:
        messages.error(request, line)
    return redirect(back)


def scoped_post(view):
    """Another team's run is 404 whatever the method (never reveal it exists); then POST only."""
    @functools.wraps(view)
    def wrapper(request: HttpRequest, pk: int) -> HttpResponse:
        get_scoped(request.user, Run.objects.all(), pk=pk)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return view(request, pk)
    return wrapper


@login_required
@scoped_post
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    """The run page's form: name, tags (comma-separated) and notes."""
    run = get_scoped(request.user, Run.objects.select_related("team"), pk=pk)
    changes = {k: request.POST[k] for k in ("name", "notes") if k in request.POST}
    if "tags" in request.POST:
        changes["tags"] = request.POST["tags"].split(",")
    try:
        services.edit_run(run, request.user, changes)
        messages.success(request, "Saved.")
    except services.RunEditError as e:
        messages.error(request, str(e))
    return redirect(run)


@login_required
@scoped_post
def archive(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_scoped(request.user, Run.objects.select_related("team"), pk=pk)
    archived = request.POST.get("archived", "1") != "0"
    try:
        services.archive_run(run, request.user, archived)
        messages.success(request, f"Run #{run.pk} {'archived' if archived else 'restored'}.")
    except services.RunActiveError as e:
        messages.error(request, str(e))
    return redirect(run)


@login_required
@scoped_post
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_scoped(request.user, Run.objects.select_related("team"), pk=pk)
    try:
        services.delete_run(run, request.user)
    except services.RunActiveError as e:
        messages.error(request, str(e))
        return redirect(run)
    messages.success(request, f"Run #{pk} and its metrics and files were deleted.")
    return redirect("runs:list")


# ---------------------------------------------------------------------------------------- live
def _cursors(request: HttpRequest, names: list[str]) -> dict[str, str]:
    """Where to resume each stream (named "<run id>", or "t<team id>" for the team's new runs):
    the Last-Event-ID (after a reconnect, the cursors of every stream, "name:entry,name:entry") or
    ?since= (the positions read with the page)."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since") or ""
    found = {m[1]: m[2] for part in raw.split(",") if (m := _CURSOR.match(part.strip()))}
    return {n: found.get(n, "$") for n in names}


def _stream_of(name: str) -> str:
    return live.team_stream_key(int(name[1:])) if name.startswith("t") else live.stream_key(int(name))


def _authorized_ids(user, ids: list[int]) -> list[int]:
    try:
        return list(scoped(user, Run.objects.filter(pk__in=ids)).values_list("pk", flat=True))
    finally:
        _release_connection()


def _authorized_team(user, raw: str) -> int | None:
    """?team=: the team whose new runs the table shows, if the user is in it."""
    team_id = parse_id(raw)
    try:
        return team_id if team_id is not None and user_teams(user).filter(pk=team_id).exists() else None
    finally:
        _release_connection()


async def table_stream(request: HttpRequest) -> HttpResponse:
    """SSE of several runs' streams in one connection (the run table's rows): each event is the
    run stream's own (metrics, status) with the run id added; ?runs=1,2,3 (runs of other teams
    are left out). With ?team=<id> (one of the user's teams), also a `created` event {"run": id}
    for each run launched in that team, so the table can insert its row."""
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    ids = await sync_to_async(_authorized_ids)(user, parse_run_ids(request.GET.get("runs", ""), MAX_LIVE_RUNS))
    team_id = await sync_to_async(_authorized_team)(user, request.GET.get("team", ""))
    if not ids and team_id is None:
        return HttpResponse("no runs to follow", status=204)
    session_key = request.session.session_key
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    cursors = _cursors(request, [str(i) for i in ids] + ([f"t{team_id}"] if team_id is not None else []))
    try:
        for name, cursor in cursors.items():  # resolve "$" once, as the run page's stream does
            if cursor == "$":
                newest = await client.xrevrange(_stream_of(name), count=1)
                cursors[name] = newest[0][0].decode() if newest else "0-0"
    except Exception as exc:  # noqa: BLE001 - Redis down: the table stays as rendered
        await client.aclose()
        log.warning("live table stream unavailable: %s", exc)
        return HttpResponse("live stream unavailable", status=503, content_type="text/plain")
    keys = {_stream_of(n).encode(): n for n in cursors}
    label = ",".join(cursors)

    async def events():
        try:
            yield f"retry: {RETRY_MS}\n: streams of {label}\n\n"
            checked = time.monotonic()
            while True:
                if time.monotonic() - checked >= RECHECK_S:
                    if not await sync_to_async(_still_authorized)(session_key, user.pk, ids, team_id):
                        yield "event: closed\ndata: access ended\n\n"
                        return
                    checked = time.monotonic()
                block = max(1, min(BLOCK_MS, int((RECHECK_S - (time.monotonic() - checked)) * 1000)))
                reply = await client.xread({_stream_of(n): c for n, c in cursors.items()}, block=block, count=500)
                if not reply:
                    yield ": keep-alive\n\n"
                    continue
                for key, entries in reply:
                    name = keys[key]
                    for entry_id, fields in entries:
                        cursors[name] = entry_id.decode()
                        kind, payload = _team_entry(fields) if name.startswith("t") else _entry(int(name), fields)
                        event_id = ",".join(f"{n}:{c}" for n, c in cursors.items())
                        yield f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis went away: the browser reconnects with Last-Event-ID
            log.warning("live table stream ended: %s", exc)
        finally:
            await client.aclose()

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _team_entry(fields: dict[bytes, bytes]) -> tuple[str, str]:
    """("created", {"run": id}) of an entry of the team's stream of new runs."""
    event = json.loads(fields.get(b"event", b"{}"))
    return ("created", json.dumps({"run": event["created"]})) if "created" in event else ("other", "{}")


def _entry(run_id: int, fields: dict[bytes, bytes]) -> tuple[str, str]:
    """(event kind, JSON with "run" added) of one stream entry (the kinds of views.live); a
    metrics entry keeps only its step and time: the table shows no values."""
    if b"event" in fields:
        kind, data = "status", json.loads(fields[b"event"])
    elif b"data" in fields:
        entry = json.loads(fields[b"data"])
        kind, data = "metrics", {"step": entry.get("step"), "t": entry.get("t")}
    else:
        kind, data = "other", {}
    return kind, json.dumps({**data, "run": run_id}, separators=(",", ":"))
