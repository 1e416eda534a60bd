from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import services
from .forms import RevokeTokenForm, TokenForm
from .middleware import SESSION_KEY
from .scoping import user_teams


@login_required
@require_POST
def switch_team(request: HttpRequest) -> HttpResponse:
    team = user_teams(request.user).filter(pk=request.POST.get("team")).first()
    if team is None:
        raise Http404("No such team.")
    request.session[SESSION_KEY] = team.pk
    nxt = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}):
        nxt = "/"
    return redirect(nxt)


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    new_token = None
    form = TokenForm()
    status = 200
    if request.method == "POST":
        if "revoke" in request.POST:
            revoke = RevokeTokenForm(request.POST)
            if not revoke.is_valid():
                return HttpResponseBadRequest("revoke must be the id of one of your tokens.")
            if not services.revoke_token(request.user, revoke.cleaned_data["revoke"]):
                raise Http404("You have no such token.")
            messages.info(request, "Token revoked.")
            return redirect("tokens")
        form = TokenForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            _, new_token = services.issue_token(request.user, d["name"], expires_in_days=d["expires_in_days"],
                                                read_only=d["scope"] == "read-only")
            form = TokenForm()
        else:
            status = 400
    return render(
        request,
        "accounts/tokens.html",
        {"tokens": request.user.api_tokens.order_by("-created_at"), "new_token": new_token, "form": form},
        status=status,
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and the launcher: database and Redis reachable."""
    from django.db import connection

    from webapp.runs import live

    status = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        status["database"] = "ok"
    except Exception as exc:
        status["database"] = f"error: {exc}"
    try:
        live.client().ping()
        status["redis"] = "ok"
    except Exception as exc:
        status["redis"] = f"error: {exc}"
    ok = all(v == "ok" for v in status.values())
    return JsonResponse(status, status=200 if ok else 503)
