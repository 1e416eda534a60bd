"""Lifecycle of a versioned team resource: version numbers, who may manage it, archive, delete.

Shared by webapp.datasets.services and webapp.rewards.services (and so by the pages and the API).
Managing (archive, restore, delete) is for the version's creator and the team's admins; any
member may read it and make new versions of it.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max, ProtectedError, QuerySet

from webapp.accounts.models import Membership
from webapp.accounts.scoping import membership, require_writer

from .models import VersionedTeamResource

R = TypeVar("R", bound=VersionedTeamResource)

USED_BY_SHOWN = 20


class InUseError(Exception):
    """The version is used by a run: it can be archived but not deleted."""


def versions(obj: VersionedTeamResource) -> QuerySet:
    """Every version of `obj`'s (team, name), newest first."""
    return type(obj).objects.filter(team_id=obj.team_id, name=obj.name).order_by("-version")


def next_version(model: type[VersionedTeamResource], team, name: str) -> int:
    """The number the next version of (team, name) gets: 1 for a new name."""
    return (model.objects.filter(team=team, name=name).aggregate(v=Max("version"))["v"] or 0) + 1


def used_by(obj: VersionedTeamResource) -> list:
    """The latest runs that use this version (at most USED_BY_SHOWN)."""
    return list(obj.runs.order_by("-created_at")[:USED_BY_SHOWN])


def can_manage(user, obj: VersionedTeamResource) -> bool:
    """Team admins manage every version; members the versions they created; viewers none."""
    m = membership(user, obj.team)
    if m is None or not m.can_write:
        return False
    return m.role == Membership.Role.ADMIN or (obj.created_by_id is not None and obj.created_by_id == user.pk)


def require_manager(user, obj: VersionedTeamResource) -> None:
    """PermissionDenied (403) unless `user` may archive or delete `obj` (see can_manage);
    Http404 for a user outside the team."""
    require_writer(user, obj.team)
    if not can_manage(user, obj):
        by = f" ({obj.created_by})" if obj.created_by_id else ""
        raise PermissionDenied(
            f"Only the member who created {obj}{by} or an admin of team {obj.team} can archive, restore or delete it."
        )


def archive(obj: R, user, archived: bool = True) -> R:
    """Hide a version from pickers (or bring it back); allowed even when runs use it."""
    require_manager(user, obj)
    type(obj).objects.filter(pk=obj.pk).update(archived=archived)
    obj.archived = archived
    return obj


def delete(obj: VersionedTeamResource, user, *, on_commit: Callable[[], None] | None = None) -> None:
    """Delete a version; InUseError if a run uses it (archive it instead).

    `on_commit` runs once the deletion is committed (e.g. removing files no version uses any more).
    """
    require_manager(user, obj)
    runs = used_by(obj)
    if runs:
        names = ", ".join(f"#{r.pk}" for r in runs[:5])
        raise InUseError(f"{obj} is used by run {names}; it cannot be deleted. Archive it instead.")
    with transaction.atomic():
        try:
            obj.delete()
        except ProtectedError:  # a run appeared since the check above
            raise InUseError(f"{obj} is used by a run; it cannot be deleted. Archive it instead.") from None
        if on_commit is not None:
            transaction.on_commit(on_commit)
