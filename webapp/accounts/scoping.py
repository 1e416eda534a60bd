"""The one place that decides which team objects a user may see.

Every view and API endpoint gets team objects through these helpers, so a user never reaches
another team's object: it is simply not found (404).
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404

from .models import Membership, Team


def user_teams(user) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)


def scoped(user, queryset: QuerySet, team_field: str = "team") -> QuerySet:
    """Restrict a queryset of team-owned objects to the user's teams."""
    if not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{f"{team_field}__memberships__user": user})


def in_team(user, queryset: QuerySet, team: Team | None, team_field: str = "team") -> QuerySet:
    """The objects of one of the user's teams (none if `team` is None or not the user's)."""
    if team is None:
        return queryset.none()
    return scoped(user, queryset, team_field).filter(**{team_field: team})


def get_scoped(user, queryset: QuerySet, team_field: str = "team", **lookup) -> Model:
    """Fetch one object of the user's teams or raise Http404."""
    try:
        return scoped(user, queryset, team_field).get(**lookup)
    except queryset.model.DoesNotExist as exc:
        raise Http404(f"No {queryset.model._meta.verbose_name} matches the given query.") from exc


def membership(user, team: Team) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team=team).first()


def can_write(user, team: Team) -> bool:
    """Whether the user may write in the team (member or admin): what pages offer edit controls for."""
    m = membership(user, team)
    return m is not None and m.can_write


def require_role(user, team: Team, *roles: str) -> Membership:
    """Raise Http404 for outsiders and PermissionDenied for members without one of `roles`."""
    m = membership(user, team)
    if m is None:
        raise Http404("No such team.")
    if roles and m.role not in roles:
        raise PermissionDenied(f"This needs the role {' or '.join(roles)} in team {team.name}.")
    return m


def require_writer(user, team: Team) -> Membership:
    return require_role(user, team, Membership.Role.MEMBER, Membership.Role.ADMIN)
