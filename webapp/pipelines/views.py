"""Pipeline pages: list, new (one launch form per stage), detail (joined charts, stage table), cancel.
Thin: services write, selectors read."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse

from gft_core.config import METHODS
from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import get_scoped, require_writer
from webapp.runs.defaults import defaults
from webapp.runs.launch import LaunchError, SourceRunNotFound
from webapp.runs.views.table import live_follow

from . import selectors, services
from .forms import PipelineForm, StageForm
from .models import Pipeline

DEFAULT_METHODS = ("sft", "gft")


@login_required
def pipeline_list(request: HttpRequest) -> HttpResponse:
    pipelines = selectors.team_pipelines(request.user, request.team).prefetch_related("stages__run") \
        if request.team else []
    return render(request, "pipelines/list.html", {"pipelines": pipelines})


def _methods(raw: str) -> list[str]:
    methods = [m.strip() for m in (raw or "").split(",") if m.strip() in METHODS][:services.MAX_STAGES]
    return methods or list(DEFAULT_METHODS)


@login_required
def pipeline_new(request: HttpRequest) -> HttpResponse:
    """GET ?methods=sft,gft,grpo lays out the stages (each pre-filled with its method's defaults);
    POST validates them together and queues stage 1."""
    team = request.team
    if team is None:
        raise Http404("You are not a member of any team.")
    require_writer(request.user, team)
    methods = _methods(request.POST.get("methods") or request.GET.get("methods", ""))
    data = request.POST if request.method == "POST" else None
    head = PipelineForm(data)
    stages = [StageForm(data, team=team, prefix=f"s{i}", initial=defaults(method=m)) for i, m in enumerate(methods)]
    for form in stages[1:]:  # a later stage starts from the previous one's final model
        form.skip_fields = ("model", "init_from_run", "init_from_step")
    if data is not None and head.is_valid() and all([f.is_valid() for f in stages]):
        inputs = [dict(f.cleaned_data) for f in stages]
        try:
            pipeline = services.create_pipeline(team, request.user, name=head.cleaned_data["name"], stages=inputs)
        except SourceRunNotFound as e:
            stages[0].add_error("init_from_run", e.errors["init_from_run"][0])
        except LaunchError as e:
            _errors_to_forms(e.errors, head, stages)
        except QuotaExceeded as e:
            head.add_error(None, str(e))
        else:
            messages.success(request, f"Pipeline #{pipeline.pk} started: stage 1 is queued.")
            return redirect(pipeline)
    return render(request, "pipelines/new.html", {"head": head, "stages": list(zip(methods, stages)),
                                                  "methods": ",".join(methods), "all_methods": METHODS})


def _errors_to_forms(errors: dict[str, list[str]], head: PipelineForm, stages: list[StageForm]) -> None:
    for key, msgs in errors.items():
        parts = key.split(".", 2)
        if parts[0] == "stages" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(stages):
            form = stages[int(parts[1])]
            field = parts[2] if len(parts) > 2 and parts[2] in form.fields else None
            for m in msgs:
                form.add_error(field, m if field or len(parts) < 3 else f"{parts[2]}: {m}")
        else:
            for m in msgs:
                head.add_error(None, f"{key}: {m}")


@login_required
def pipeline_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pipeline = get_scoped(request.user, Pipeline.objects.select_related("team", "created_by"), pk=pk)
    stages = list(pipeline.stages.select_related("run").order_by("index"))
    run_ids = [s.run_id for s in stages if s.run_id]
    active = [s.run_id for s in stages if s.run and s.run.is_active]
    return render(request, "pipelines/detail.html", {
        "pipeline": pipeline, "stages": stages, "joined": selectors.joined_series(pipeline),
        "live": live_follow(active, pending=pipeline.is_active and not active),
        "compare_url": f"{reverse('runs:compare')}?runs={','.join(map(str, run_ids))}" if run_ids else "",
    })


@login_required
def pipeline_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    pipeline = get_scoped(request.user, Pipeline.objects.select_related("team"), pk=pk)  # 404 first, any method
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    require_writer(request.user, pipeline.team)
    try:
        services.cancel_pipeline(pipeline, request.user)
        messages.success(request, f"Pipeline #{pipeline.pk} cancelled.")
    except services.PipelineError as e:
        messages.error(request, str(e))
    return redirect(pipeline)
