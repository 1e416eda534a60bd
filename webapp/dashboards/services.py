"""Dashboards: saved comparisons of a team's runs (runs, charts, smoothing)."""
from __future__ import annotations

from django import forms
from django.db.models import QuerySet

from webapp.accounts.scoping import in_team
from webapp.runs.listing import parse_id
from webapp.runs.models import Run

from .models import Dashboard

MAX_RUNS = 10


def validate_run_ids(user, team, raw: str) -> list[int]:
    """'3,1,2' -> [3, 1, 2]; every run must exist in `team` and be visible to `user`."""
    ids: list[int] = []
    for part in str(raw).split(","):
        part = part.strip()
        if not part:
            continue
        run_id = parse_id(part)
        if run_id is None:
            raise forms.ValidationError(f"{part!r} is not a run id.")
        if run_id not in ids:
            ids.append(run_id)
    if not ids:
        raise forms.ValidationError("Choose at least one run.")
    if len(ids) > MAX_RUNS:
        raise forms.ValidationError(f"A dashboard holds at most {MAX_RUNS} runs.")
    found = set(in_team(user, Run.objects.filter(pk__in=ids), team).values_list("pk", flat=True))
    missing = [i for i in ids if i not in found]
    if missing:
        # A dashboard is shared with the team: every run on it must be the team's own.
        raise forms.ValidationError(f"Runs {', '.join(map(str, missing))} are not runs of team {team}.")
    return ids


def name_taken(team, name: str, exclude: Dashboard | None = None) -> bool:
    qs = Dashboard.objects.filter(team=team, name=name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return qs.exists()


def save_dashboard(*, team, user, data: dict, instance: Dashboard | None = None) -> Dashboard:
    """Create or update a dashboard from DashboardForm.cleaned_data."""
    dash = instance or Dashboard(team=team, created_by=user)
    dash.name = data["name"]
    dash.run_ids = data["runs"]
    dash.charts = list(data.get("charts") or [])
    dash.smoothing = float(data.get("smoothing") or 0.0)
    dash.chart_settings = {"log": bool(data.get("logscale")), "xmode": data.get("xmode") or "step",
                           "sync": bool(data.get("sync"))}
    dash.leaderboard = {"suite": data.get("lb_suite"), "pick": data.get("lb_pick") or "best",
                        "baseline": data.get("lb_baseline")}
    dash.save()
    return dash


def team_dashboards(user, team) -> QuerySet[Dashboard]:
    return in_team(user, Dashboard.objects.select_related("created_by"), team)


def dashboard_runs(user, dash: Dashboard) -> list[Run]:
    """The dashboard's runs that still exist, in its order."""
    runs = in_team(user, Run.objects.select_related("dataset", "reward_config", "created_by"), dash.team)
    found = runs.in_bulk(dash.run_ids)
    return [found[i] for i in dash.run_ids if i in found]
