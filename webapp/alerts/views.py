"""The team's alerts page: the feed (acknowledge), the rules (mute, new rule, edit), webhooks and the
last deliveries. Thin: writes go through webapp.alerts.services."""
from __future__ import annotations

from typing import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.scoping import can_write, get_scoped, in_team, require_writer

from . import selectors, services
from .builtin import ensure_builtin_rules
from .forms import RuleEditForm, RuleForm, WebhookForm
from .models import Alert, AlertRule

FEED_LENGTH = 100


@login_required
def feed(request: HttpRequest, rule_form: RuleForm | None = None, webhook_form: WebhookForm | None = None,
         status: int = 200) -> HttpResponse:
    team = request.team
    ctx = {"alerts": [], "rules": [], "webhooks": [], "deliveries": []}
    if team is not None:
        ensure_builtin_rules(team)
        ctx = {"alerts": in_team(request.user, selectors.alerts(request.user), team)[:FEED_LENGTH],
               "rules": in_team(request.user, selectors.rules(request.user), team),
               "webhooks": in_team(request.user, selectors.webhooks(request.user), team),
               "deliveries": selectors.last_deliveries(team)}
    ctx.update(rule_form=rule_form or RuleForm(), webhook_form=webhook_form or WebhookForm(),
               can_write=team is not None and can_write(request.user, team))
    return render(request, "alerts/feed.html", ctx, status=status)


def _posted(request: HttpRequest, model: type, pk: int):
    """The object a feed button posts to: scoped first (another team's is a 404), then writers only;
    None for a method other than POST."""
    obj = get_scoped(request.user, model.objects.all(), pk=pk)
    if request.method != "POST":
        return None
    require_writer(request.user, obj.team)
    return obj


@login_required
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    if (alert := _posted(request, Alert, pk)) is None:
        return HttpResponseNotAllowed(["POST"])
    services.acknowledge(alert, request.user)
    return redirect("alerts:feed")


@login_required
def mute(request: HttpRequest, pk: int) -> HttpResponse:
    if (rule := _posted(request, AlertRule, pk)) is None:
        return HttpResponseNotAllowed(["POST"])
    muted = request.POST.get("muted", "1") == "1"
    services.set_muted(rule, muted)
    messages.success(request, f"{'Muted' if muted else 'Unmuted'} “{rule.name}”.")
    return redirect("alerts:feed")


def _create(request: HttpRequest, form_class: type[forms.Form], form_name: str,
            save: Callable[[object, dict], str]) -> HttpResponse:
    """A new-rule / new-webhook form posted to the team's page: writers only; an invalid form is the
    page again with its field errors (400), nothing created; `save(team, cleaned_data)` says what it did."""
    if request.team is None:
        return redirect("alerts:feed")
    require_writer(request.user, request.team)
    form = form_class(request.POST)
    if not form.is_valid():
        return feed(request, status=400, **{form_name: form})
    messages.success(request, save(request.team, form.cleaned_data))
    return redirect("alerts:feed")


def _rule_fields(form: RuleForm) -> dict:
    return {f: form.cleaned_data[f] for f in form.Meta.fields}


@login_required
@require_POST
def rule_create(request: HttpRequest) -> HttpResponse:
    def save(team, data: dict) -> str:
        return f"Added rule “{services.create_rule(team, **{f: data[f] for f in RuleForm.Meta.fields}).name}”."

    return _create(request, RuleForm, "rule_form", save)


@login_required
@require_POST
def webhook_create(request: HttpRequest) -> HttpResponse:
    return _create(request, WebhookForm, "webhook_form",
                   lambda team, data: f"Added webhook “{services.create_webhook(team, **data).name}”.")


@login_required
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """An existing rule's settings from a form: the API's checks (field errors, 400), writers only."""
    rule = get_scoped(request.user, AlertRule.objects.all(), pk=pk)  # scope first: another team's is a 404
    name, status = rule.name, 200
    if request.method == "POST":
        require_writer(request.user, rule.team)
        # The form fills a copy: an invalid post leaves nothing changed on the rule shown.
        form = RuleEditForm(request.POST, instance=AlertRule.objects.get(pk=rule.pk))
        if form.is_valid():
            try:
                services.update_rule(rule, **_rule_fields(form))
            except services.RuleError as e:  # checked by the form already; kept for a race with the API
                form.add_error(e.field, str(e))
            else:
                messages.success(request, f"Saved rule “{rule.name}”.")
                return redirect("alerts:feed")
        status = 400
    elif request.method == "GET":
        form = RuleEditForm(instance=rule)
    else:
        return HttpResponseNotAllowed(["GET", "POST"])
    return render(request, "alerts/rule_edit.html", {"form": form, "rule": rule, "name": name}, status=status)
