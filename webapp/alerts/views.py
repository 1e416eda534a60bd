"""The team's alerts page: the feed (acknowledge), the rules (mute, new rule), webhooks and the last
deliveries. Thin: writes go through webapp.alerts.services."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.scoping import get_scoped, in_team, require_writer

from . import selectors, services
from .builtin import ensure_builtin_rules
from .forms import RuleForm, WebhookForm
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
    ctx.update(rule_form=rule_form or RuleForm(), webhook_form=webhook_form or WebhookForm())
    return render(request, "alerts/feed.html", ctx, status=status)


@login_required
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_scoped(request.user, Alert.objects.all(), pk=pk)  # scope first: another team's is a 404
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    require_writer(request.user, alert.team)
    services.acknowledge(alert, request.user)
    return redirect("alerts:feed")


@login_required
def mute(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_scoped(request.user, AlertRule.objects.all(), pk=pk)  # scope first: another team's is a 404
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    require_writer(request.user, rule.team)
    muted = request.POST.get("muted", "1") == "1"
    services.set_muted(rule, muted)
    messages.success(request, f"{'Muted' if muted else 'Unmuted'} “{rule.name}”.")
    return redirect("alerts:feed")


@login_required
@require_POST
def rule_create(request: HttpRequest) -> HttpResponse:
    if request.team is None:
        return redirect("alerts:feed")
    require_writer(request.user, request.team)
    form = RuleForm(request.POST)
    if not form.is_valid():
        return feed(request, rule_form=form, status=400)
    rule = services.create_rule(request.team, **{f: form.cleaned_data[f] for f in RuleForm.Meta.fields})
    messages.success(request, f"Added rule “{rule.name}”.")
    return redirect("alerts:feed")


@login_required
@require_POST
def webhook_create(request: HttpRequest) -> HttpResponse:
    if request.team is None:
        return redirect("alerts:feed")
    require_writer(request.user, request.team)
    form = WebhookForm(request.POST)
    if not form.is_valid():
        return feed(request, webhook_form=form, status=400)
    services.create_webhook(request.team, **form.cleaned_data)
    return redirect("alerts:feed")
