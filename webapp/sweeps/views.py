"""Sweep pages: list, new (the launch form + the search), the sweep page, cancel. Thin: reads
through selectors, writes through services."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import get_scoped, require_writer, scoped
from webapp.resources.views import team_write
from webapp.runs.defaults import defaults
from webapp.runs.models import Run
from webapp.runs.views.table import live_follow

from . import selectors, services
from .forms import SweepForm
from .models import Sweep


@login_required
def sweep_list(request: HttpRequest) -> HttpResponse:
    sweeps = scoped(request.user, Sweep.objects.select_related("created_by")).order_by("-created_at")[:200]
    return render(request, "sweeps/list.html", {"sweeps": sweeps})


@login_required
def sweep_new(request: HttpRequest) -> HttpResponse:
    team = request.team
    if team is None:
        raise Http404("You are not a member of any team.")
    require_writer(request.user, team)
    form = SweepForm(request.POST or None, team=team, initial=defaults())
    if request.method == "POST" and form.is_valid():
        try:
            sweep = services.create_sweep(team, request.user, form.sweep_data())
        except services.SweepError as e:
            for field, errs in e.errors.items():
                name = field.removeprefix("base.").split(".", 1)[0]
                name = {"budget": "runs", "name": "sweep_name", "seed": "sweep_seed"}.get(name, name)
                for message in errs:
                    form.add_error(name if name in form.fields else None, f"{field}: {message}")
        except QuotaExceeded as e:
            form.add_error(None, str(e))
        else:
            messages.success(request, f"Sweep #{sweep.pk} started: {sweep.trials.count()} run(s) queued.")
            return redirect(sweep)
    return render(request, "sweeps/new.html", {"form": form})


@login_required
def sweep_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sweep = get_scoped(request.user, Sweep.objects.select_related("created_by"), pk=pk)
    rows = list(selectors.trials(sweep))
    groups = selectors.seed_groups(sweep, rows)
    active = [t.run_id for t in rows if t.run.status in Run.ACTIVE]
    # Running, yet no run to follow or a finished run not told to the study yet: more is coming.
    pending = sweep.status == Sweep.Status.RUNNING and (
        not active or any(t.state == t.State.RUNNING and t.run.status in Run.FINISHED for t in rows))
    return render(request, "sweeps/detail.html", {
        "sweep": sweep, "trials": rows, "progress": selectors.progress(sweep), "best": selectors.best_trial(sweep, rows),
        "groups": groups, "grouped": len(groups) < len(rows), "plot": selectors.plot_data(sweep, rows),
        "run_ids": ",".join(str(t.run_id) for t in rows), "live": live_follow(active, pending),
    })


@team_write(Sweep)
def sweep_cancel(request: HttpRequest, sweep: Sweep) -> HttpResponse:
    try:
        services.cancel_sweep(sweep, request.user.get_username())
        messages.success(request, f"Sweep #{sweep.pk} cancelled; its queued and running runs are stopping.")
    except services.SweepStateError as e:
        messages.error(request, str(e))
    return redirect(sweep)
