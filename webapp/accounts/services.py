"""Team administration used by the management commands and the launcher."""
from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from .models import ApiToken, Membership, Team


@transaction.atomic
def ensure_team(name: str) -> Team:
    team, _ = Team.objects.get_or_create(slug=slugify(name)[:64] or "team", defaults={"name": name})
    return team


@transaction.atomic
def invite(team: Team, username: str, *, email: str = "", role: str = Membership.Role.MEMBER,
           password: str | None = None) -> tuple[object, str | None]:
    """Add a user to a team, creating the account if needed.

    Returns (user, password) where password is the new account's one-time password, or None for
    an existing account.
    """
    if role not in Membership.Role.values:
        raise ValueError(f"role must be one of {', '.join(Membership.Role.values)}, got {role!r}")
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    new_password = None
    if user is None:
        new_password = password or secrets.token_urlsafe(12)
        user = User.objects.create_user(username=username, email=email, password=new_password)
    Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    return user, new_password


def issue_token(user, name: str, *, expires_in_days: int | None = None,
                read_only: bool = False) -> tuple[ApiToken, str]:
    """A new API token for `user`: (token, raw value). The raw value is shown once, never stored."""
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    return ApiToken.issue(user, name, expires_at=expires_at, read_only=read_only)


def revoke_token(user, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False when the user has no such token."""
    return bool(user.api_tokens.filter(pk=token_id).update(revoked=True))
