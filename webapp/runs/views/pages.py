from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webapp.accounts.scoping import scoped

from ..models import Run


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = scoped(request.user, Run.objects.select_related("team")).filter(team=request.team)
    return render(request, "runs/list.html", {"runs": runs[:200]})
