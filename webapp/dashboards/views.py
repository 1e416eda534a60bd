"""Team dashboards: list, save a comparison, open (a live compare page), edit, delete."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.scoping import get_scoped, require_writer
from webapp.runs.views.pages import compare_context

from . import services
from .forms import DashboardForm
from .models import Dashboard


@login_required
def dashboard_list(request: HttpRequest) -> HttpResponse:
    dashboards = services.team_dashboards(request.user, request.team) if request.team else []
    return render(request, "dashboards/list.html", {"dashboards": dashboards})


@login_required
@require_POST
def dashboard_create(request: HttpRequest) -> HttpResponse:
    if request.team is None:
        return redirect("dashboards:list")
    require_writer(request.user, request.team)
    form = DashboardForm(request.POST, team=request.team, user=request.user)
    if not form.is_valid():
        return render(request, "dashboards/form_errors.html", {"form": form}, status=400)
    dash = services.save_dashboard(team=request.team, user=request.user, data=form.cleaned_data)
    messages.success(request, f"Saved dashboard “{dash.name}”. Share its URL with your team.")
    return redirect("dashboards:detail", pk=dash.pk)


@login_required
def dashboard_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dash = get_scoped(request.user, Dashboard.objects.select_related("team"), pk=pk)
    runs = services.dashboard_runs(request.user, dash)
    ctx = compare_context(request, runs, chart_ids=dash.charts, smoothing=dash.smoothing, dashboard=dash,
                          chart_settings=dash.chart_settings)
    return render(request, "runs/compare.html", ctx)


@login_required
def dashboard_update(request: HttpRequest, pk: int) -> HttpResponse:
    # Scope first: another team's dashboard is a 404 whatever the method.
    dash = get_scoped(request.user, Dashboard.objects.select_related("team"), pk=pk)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    require_writer(request.user, dash.team)
    form = DashboardForm(request.POST, team=dash.team, user=request.user, instance=dash)
    if not form.is_valid():
        return render(request, "dashboards/form_errors.html", {"form": form}, status=400)
    services.save_dashboard(team=dash.team, user=request.user, data=form.cleaned_data, instance=dash)
    messages.success(request, "Dashboard updated.")
    return redirect("dashboards:detail", pk=dash.pk)


@login_required
def dashboard_delete(request: HttpRequest, pk: int) -> HttpResponse:
    # Scope first: another team's dashboard is a 404 whatever the method.
    dash = get_scoped(request.user, Dashboard.objects.select_related("team"), pk=pk)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    require_writer(request.user, dash.team)
    name = dash.name
    dash.delete()
    messages.success(request, f"Deleted dashboard “{name}”.")
    return redirect("dashboards:list")
