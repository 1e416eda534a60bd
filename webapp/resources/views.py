"""`team_write`: the preamble of every POST-only action on one team object, written once."""
from __future__ import annotations

import functools
from typing import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render

from webapp.accounts.scoping import get_scoped, require_writer

from .services import require_manager


def team_write(model_or_queryset: type[Model] | QuerySet, *, manage: bool = False) -> Callable:
    """Decorate `view(request, obj, ...)` reached by a URL with `<int:pk>`.

    In this order: anonymous -> login page; another team's object -> 404 (whatever the method, so
    nobody learns that it exists); not POST -> 405; viewer -> 403; with manage=True, a member who
    did not create the object -> 403 (see webapp.resources.services.can_manage). A 403 page says
    why, and so does any PermissionDenied the view itself raises.
    """
    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @functools.wraps(view)
        def wrapper(request: HttpRequest, pk: int, *args, **kwargs) -> HttpResponse:
            qs = model_or_queryset if isinstance(model_or_queryset, QuerySet) else model_or_queryset.objects.all()
            obj = get_scoped(request.user, qs.select_related("team"), pk=pk)
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            try:
                if manage:
                    require_manager(request.user, obj)
                else:
                    require_writer(request.user, obj.team)
                return view(request, obj, *args, **kwargs)
            except PermissionDenied as exc:
                return render(request, "resources/forbidden.html", {"message": str(exc) or "You may not do this."},
                              status=403)

        return wrapper

    return decorator
