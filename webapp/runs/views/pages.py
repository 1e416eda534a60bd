"""Run page, compare page, and the JSON/CSV they load their charts from.

Views stay thin: scoping via webapp.accounts.scoping, series via webapp.runs.series, page data via
webapp.runs.charts / listing.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
from collections.abc import AsyncIterator

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from webapp.accounts.scoping import get_scoped, in_team, scoped

from .. import charts, files, hints, live, series
from ..groups import at_step as groups_at_step, steps as group_sample_steps
from ..listing import parse_id
from ..modelpaths import config_trainable
from ..models import Run

log = logging.getLogger(__name__)
MAX_COMPARE = 10


def parse_run_ids(raw: str, limit: int = MAX_COMPARE) -> list[int]:
    """'3,1,2' -> [3, 1, 2] (order kept, duplicates dropped); Http404 on garbage."""
    ids: list[int] = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        run_id = parse_id(part)
        if run_id is None:
            raise Http404(f"{part!r} is not a run id.")
        if run_id not in ids:
            ids.append(run_id)
    return ids[:limit]


def scoped_runs(request: HttpRequest, ids: list[int]) -> list[Run]:
    """The runs with these ids, in this order; any id outside the user's teams is a 404."""
    found = scoped(request.user, Run.objects.select_related("dataset", "reward_config", "created_by")).in_bulk(ids)
    if len(found) != len(ids):
        raise Http404("No such run.")
    return [found[i] for i in ids]


def stream_position(run_id: int) -> str | None:
    """Id of the newest entry of the run's stream, read BEFORE the history (so nothing falls in
    between); None when Redis is unavailable (the page then polls)."""
    try:
        entries = live.client().xrevrange(live.stream_key(run_id), count=1)
    except Exception as exc:  # Redis down: the page falls back to polling and says so
        log.warning("stream position of run %s unavailable: %s", run_id, exc)
        return None
    return entries[0][0].decode() if entries else "0-0"


def _finite(values: list) -> list:
    return [v if v is None or math.isfinite(v) else None for v in values]


def jsonable_series(data: dict) -> dict:
    """JSON has no NaN/inf: they become null (a gap in the chart)."""
    return {str(rid): {k: {"step": s["step"], "value": _finite(s["value"]), "wall_time": s["wall_time"]}
                       for k, s in per_key.items()} for rid, per_key in data.items()}


STEP_LIMIT = 2**31 - 1  # steps are stored as Postgres integers
SERIES_MAX_POINTS = 20_000  # per key and run of the chart data (?max_points=; above it: 400)


class BadParam(ValueError):
    """A query parameter the view cannot use; the message names it (answered as a JSON 400)."""


def answers_bad_params(view):
    """JSON views: a BadParam becomes 400 {"error": message} instead of a 500."""
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except BadParam as e:
            return JsonResponse({"error": str(e)}, status=400)
    return wrapper


def _int_param(request: HttpRequest, name: str) -> int | None:
    """A whole-number query parameter ("120", "1e3"), or None when absent; BadParam for anything
    else, including values beyond the step column's range such as 1e400 or nan."""
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > STEP_LIMIT:
        raise BadParam(f"{name} must be a whole number within ±{STEP_LIMIT} (got {raw[:40]!r}).")
    return int(value)


# ---------------------------------------------------------------------------------------- pages
@login_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_scoped(request.user, Run.objects.select_related("dataset", "reward_config", "created_by", "team",
                                                              "init_from_run"), pk=pk)
    from webapp.evaluations.views import run_tab_context  # that module reuses this one's helpers

    state = charts.run_state(run)
    evaluation = run_tab_context(request, run)
    shown = charts.charts_for_methods([run.method]) + charts.system_charts(
        run.summary or {}, live_gpus=max(1, run.num_gpus) if run.is_active else None)
    page = {
        "runs": [{"id": run.pk, "name": run.name, "tau": charts.tau_of(run), "state": state}],
        "charts": shown,
        "urls": {"series": reverse("runs:series"), "stream": reverse("runs:stream", args=[run.pk]),
                 "history": charts.history_url([run], shown, compare=False),
                 "groups": reverse("runs:groups", args=[run.pk]), **evaluation.pop("eval_urls")},
        "mode": "run",
        "group_sample_count": (run.config or {}).get("group_sample_count"),
        "group_sample_interval": (run.config or {}).get("group_sample_interval"),
    }
    return render(request, "runs/detail.html", {
        "run": run, "state": state, "eta_text": charts.format_eta(state["eta_s"]), "page": page, "tau": charts.tau_of(run),
        "device": charts.run_device(run),
        "tau_hint": hints.tau_hint(run) if charts.tau_of(run) is not None else None,
        "config_json": json.dumps(run.config, indent=2, sort_keys=True, default=str),
        "trainable": config_trainable(run.config or {}),
        "artifacts": files.artifacts_with_sizes(run),
        "group_samples_url": reverse("runs:group_samples", args=[run.pk]), "events": run.events.all()[:50],
        "group_steps": group_sample_steps(run),
        "cancel_url": reverse("runs:cancel", args=[run.pk]), "resume_url": reverse("runs:resume", args=[run.pk]),
        "logs_url": reverse("runs:logs", args=[run.pk]),
        "clone_url": f"{reverse('runs:launch')}?clone={run.pk}", **evaluation,
        "continuations": run.continuations.filter(team=run.team).only("pk", "name", "init_from_step"),
        "continue_url": f"{reverse('runs:launch')}?init_from_run={run.pk}",
    })


@login_required
def compare(request: HttpRequest) -> HttpResponse:
    # ?runs=1,2 and the run picker's ?pick=3&pick=4 (added after them)
    ids = parse_run_ids(",".join([request.GET.get("runs", ""), *request.GET.getlist("pick")]))
    runs = scoped_runs(request, ids) if ids else []
    return render(request, "runs/compare.html", compare_context(request, runs, chart_ids=[], smoothing=0.0))


PICKER_RUNS = 300  # the run picker lists the team's newest runs


def picker_runs(request: HttpRequest, team, exclude: list[int]):
    """The runs the compare page's picker offers: the team's newest, those shown left out."""
    if team is None:
        return []
    return list(scoped(request.user, Run.objects.filter(team=team)).exclude(pk__in=exclude)
                .only("pk", "name", "method", "status", "created_at").order_by("-created_at")[:PICKER_RUNS])


def compare_context(request: HttpRequest, runs: list[Run], *, chart_ids: list[str], smoothing: float,
                    dashboard=None, chart_settings: dict | None = None) -> dict:
    """Context of the compare template (also used by saved dashboards, with their chart settings:
    log, xmode, sync; the page's URL overrides them)."""
    # A saved choice stays as saved; otherwise the charts that mean something for these methods.
    chosen = charts.charts_for(chart_ids) if chart_ids or not runs else charts.charts_for_methods([r.method for r in runs])
    summary = series.final_and_best([r.pk for r in runs], charts.SUMMARY_KEYS) if runs else {}
    summary_rows = []
    for key in charts.SUMMARY_KEYS:
        cells = [summary.get(r.pk, {}).get(key) for r in runs]
        if any(cells):
            summary_rows.append((key, series.direction(key), cells))
    page = {
        "runs": [{"id": r.pk, "name": r.name, "tau": charts.tau_of(r), "state": charts.run_state(r)} for r in runs],
        "charts": chosen, "smoothing": smoothing, "settings": chart_settings or {}, "mode": "compare",
        "groups": charts.seed_groups(runs),
        "urls": {"series": reverse("runs:series"), "history": charts.history_url(runs, chosen, compare=True),
                 "streams": {str(r.pk): reverse("runs:stream", args=[r.pk]) for r in runs}},
    }
    from webapp.evaluations.views import leaderboard_context  # that module reuses this one's helpers

    team = dashboard.team if dashboard is not None else (runs[0].team if runs else None)
    board = leaderboard_context(request, runs, team, saved=dashboard.leaderboard if dashboard is not None else None)
    return {**board, "runs": runs, "run_ids": ",".join(str(r.pk) for r in runs), "diff": charts.config_diff(runs) if runs else [],
            "summary_rows": summary_rows, "page": page, "all_charts": charts.CHARTS,
            "chosen_ids": [c["id"] for c in chosen] if chart_ids else [], "dashboard": dashboard,
            "too_few": len(runs) < 2, "max_compare": MAX_COMPARE,
            "seed_groups": sum(len(g["runs"]) > 1 for g in page["groups"]),
            "picker": picker_runs(request, team or request.team, [r.pk for r in runs]) if len(runs) < MAX_COMPARE else []}


# ---------------------------------------------------------------------------------------- data
@login_required
@require_GET
@answers_bad_params
def series_json(request: HttpRequest) -> JsonResponse:
    """Chart data of 1-10 runs: ?runs=1,2&keys=loss,lr[&hist=adv/hist][&step_min=&step_max=&max_points=]."""
    ids = parse_run_ids(request.GET.get("runs", ""))
    if not ids:
        return JsonResponse({"error": "runs= is required"}, status=400)
    runs = scoped_runs(request, ids)
    keys = [k for k in request.GET.get("keys", "").split(",") if k][:80]
    step_min, step_max = _int_param(request, "step_min"), _int_param(request, "step_max")
    max_points = _int_param(request, "max_points") or 1000
    if max_points > SERIES_MAX_POINTS:
        raise BadParam(f"max_points must be at most {SERIES_MAX_POINTS} (got {max_points}).")
    max_points = max(max_points, 10)
    # Stream position first, history second: entries after the position are new or duplicates
    # of the history (the page drops steps it already has), never lost.
    positions = {str(r.pk): stream_position(r.pk) for r in runs}
    # ... and the states read again after it: a run that ended between the first read and the
    # position is shown ended (its end event lies before the position, never replayed).
    fresh = Run.objects.in_bulk([r.pk for r in runs])
    runs = [fresh[r.pk] for r in runs if r.pk in fresh]
    positions = {str(r.pk): (positions[str(r.pk)] if r.is_active else None) for r in runs}
    # Points read through the steps of these same rows: state, series and histograms agree.
    data = series.load_series(ids, keys, step_min=step_min, step_max=step_max, max_points=max_points, runs=fresh)
    out = {"series": jsonable_series(data), "runs": {str(r.pk): charts.run_state(r) for r in runs},
           "stream_ids": positions}
    hist = request.GET.get("hist")
    if hist:
        out["hist"] = {str(k): v for k, v in series.load_histograms(
            ids, hist, step_min=step_min, step_max=step_max, max_rows=min(max_points, 400), runs=fresh).items()}
    return JsonResponse(out)


CSV_HEADER = ("run_id", "metric", "step", "value", "wall_time")


async def csv_chunks(ids: list[int], keys: list[str]) -> AsyncIterator[str]:
    """The CSV of series.afull_points, one chunk per page of points: an async iterator, so under
    ASGI the response streams (a sync iterator would be read whole into memory first)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_HEADER)
    yield buf.getvalue()
    async for page in series.afull_points(ids, keys):
        buf.seek(0)
        buf.truncate()
        writer.writerows(page)
        yield buf.getvalue()


@login_required
@require_GET
def series_csv(request: HttpRequest) -> StreamingHttpResponse | HttpResponse:
    """Every point of the chosen series at full resolution, as CSV (streamed page by page)."""
    ids = parse_run_ids(request.GET.get("runs", ""))
    keys = [k for k in request.GET.get("keys", "").split(",") if k]
    if not ids or not keys:
        return HttpResponseBadRequest("runs= and keys= are required")
    scoped_runs(request, ids)
    name = "metrics-" + "-".join(map(str, ids)) + ".csv"
    return StreamingHttpResponse(csv_chunks(ids, keys), content_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})


@login_required
@require_GET
@answers_bad_params
def groups(request: HttpRequest, pk: int) -> JsonResponse | HttpResponse:
    """Group inspector data of a run at a step: ?step=N (default latest); ?group=i&download=1 exports one."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    step = _int_param(request, "step")
    data = groups_at_step(run, step)
    if request.GET.get("download"):
        index = _int_param(request, "group") or 0
        record = next((g for g in data["groups"] if g["group_index"] == index), None)
        if record is None:
            raise Http404("No such group.")
        body = json.dumps({"run": run.pk, "step": data["step"], "tau": data["tau"], **record}, indent=2)
        return HttpResponse(body, content_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="run{run.pk}-step{data["step"]}-group{index}.json"'})
    return JsonResponse(data)
