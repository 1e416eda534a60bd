from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .middleware import SESSION_KEY
from .models import ApiToken
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
    if request.method == "POST":
        if "revoke" in request.POST:
            request.user.api_tokens.filter(pk=request.POST["revoke"]).update(revoked=True)
            messages.info(request, "Token revoked.")
            return redirect("tokens")
        name = request.POST.get("name", "").strip() or "cli"
        _, new_token = ApiToken.issue(request.user, name)
    return render(
        request,
        "accounts/tokens.html",
        {"tokens": request.user.api_tokens.order_by("-created_at"), "new_token": new_token},
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
