"""Reward config pages: list, create, detail with the "test this reward" panel, new version, archive, delete."""
from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from webapp.accounts.scoping import can_write, get_scoped, in_team, require_writer
from webapp.datasets.models import Dataset
from webapp.resources.services import can_manage
from webapp.resources.views import team_write

from . import services
from .forms import RewardConfigForm, RewardTestForm, term_formset, term_rewards
from .models import RewardConfig, RewardTest


def _get(request: HttpRequest, pk: int) -> RewardConfig:
    return get_scoped(request.user, RewardConfig.objects.select_related("team", "previous", "created_by"), pk=pk)


def _datasets(request: HttpRequest, config: RewardConfig):
    """The datasets a test of `config` may read: its team's, not archived."""
    return in_team(request.user, Dataset.objects.filter(archived=False), config.team).order_by("name", "-version")


@login_required
def reward_list(request: HttpRequest) -> HttpResponse:
    qs = in_team(request.user, RewardConfig.objects.select_related("created_by"), request.team)
    show_archived = request.GET.get("archived") == "1"
    if not show_archived:
        qs = qs.filter(archived=False)
    configs = [(c, services.describe(c.spec)) for c in qs[:500]]
    return render(request, "rewards/list.html", {"configs": configs, "show_archived": show_archived})


def _editor(request: HttpRequest, *, config: RewardConfig | None) -> HttpResponse:
    """The create form (config None) and the new-version form share one page."""
    team = config.team if config else request.team
    if team is None:
        raise Http404("You are not a member of any team.")
    require_writer(request.user, team)
    if request.method == "POST":
        terms = term_formset(request.POST)
        form = RewardConfigForm(request.POST, terms=terms)
        if config is not None:
            form.fields["name"].required = False
        if form.is_valid():
            d = form.cleaned_data
            try:
                if config is None:
                    new = services.create_reward_config(team, request.user, name=d["name"], spec=d["spec"], description=d["description"])
                else:
                    new = services.new_reward_version(config, request.user, spec=d["spec"], description=d["description"])
            except services.RewardConfigError as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Saved {new}.")
                return redirect("rewards:detail", pk=new.pk)
    else:
        spec = config.spec if config else None
        terms = term_formset(spec=spec)
        initial = {"name": config.name, "description": config.description} if config else {}
        if config is not None and services.terms_from_spec(config.spec) is None:  # nested sums: JSON only
            initial["spec_json"] = json.dumps(config.spec, indent=2)
        form = RewardConfigForm(initial=initial, terms=terms)
    return render(request, "rewards/edit.html", {"form": form, "terms": terms, "config": config, "rewards": term_rewards()})


@login_required
def create(request: HttpRequest) -> HttpResponse:
    return _editor(request, config=None)


@login_required
def new_version(request: HttpRequest, pk: int) -> HttpResponse:
    return _editor(request, config=_get(request, pk))


@login_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    config = _get(request, pk)
    datasets = _datasets(request, config)
    test = None
    if request.GET.get("test"):
        test = RewardTest.objects.filter(reward_config=config, pk=request.GET["test"]).select_related("dataset").first()
    initial = {}
    chosen = request.GET.get("dataset")
    if test is not None:
        initial = {"dataset": test.dataset_id, "sample_size": test.sample_size, "seed": test.seed,
                   "response": test.response, "response_ground_truth": test.response_ground_truth}
    elif chosen and chosen.isdigit() and datasets.filter(pk=chosen).exists():
        initial = {"dataset": int(chosen)}
    low_rows = []
    if test is not None and test.status == RewardTest.Status.DONE:
        low_rows = [r for r in test.result.get("rows", [])
                    if (r["expert"] is not None and r["expert"] < 1) or any(t < 1 for t in r["teachers"])][:50]
    return render(request, "rewards/detail.html", {
        "config": config, "described": services.describe(config.spec), "spec_json": json.dumps(config.spec, indent=2),
        "runs": services.used_by(config), "versions": services.versions(config),
        "can_write": can_write(request.user, config.team), "can_manage": can_manage(request.user, config),
        "test_form": RewardTestForm(initial=initial, datasets=datasets), "test": test, "low_rows": low_rows,
        "recent_tests": config.tests.select_related("dataset")[:10],
    })


@team_write(RewardConfig)
def run_test(request: HttpRequest, config: RewardConfig) -> HttpResponse:
    """Queue a reward test; the detail page then shows and polls it."""
    pk = config.pk
    form = RewardTestForm(request.POST, datasets=_datasets(request, config), spec=config.spec)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("rewards:detail", pk=pk)
    d = form.cleaned_data
    try:
        test = services.start_reward_test(config, d["dataset"], request.user, sample_size=d["sample_size"], seed=d["seed"] or 0,
                                          response=d["response"], response_ground_truth=d["response_ground_truth"])
    except services.RewardConfigError as e:
        messages.error(request, str(e))
        return redirect("rewards:detail", pk=pk)
    return redirect(f"{reverse('rewards:detail', args=[pk])}?test={test.pk}#test")


@login_required
def test_status(request: HttpRequest, pk: int, test_id: int) -> JsonResponse:
    config = _get(request, pk)
    test = RewardTest.objects.filter(reward_config=config, pk=test_id).first()
    if test is None:
        raise Http404("No such test.")
    return JsonResponse({"status": test.status, "error": test.error})


@team_write(RewardConfig, manage=True)
def archive(request: HttpRequest, config: RewardConfig) -> HttpResponse:
    archived = request.POST.get("archived", "1") == "1"
    services.archive(config, request.user, archived)
    messages.info(request, f"{config} {'archived' if archived else 'restored'}.")
    return redirect("rewards:detail", pk=config.pk)


@team_write(RewardConfig, manage=True)
def delete(request: HttpRequest, config: RewardConfig) -> HttpResponse:
    try:
        services.delete(config, request.user)
    except services.InUseError as e:
        messages.error(request, str(e))
        return redirect("rewards:detail", pk=config.pk)
    messages.info(request, f"Deleted {config}.")
    return redirect("rewards:list")
