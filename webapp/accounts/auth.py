"""Token authentication for the REST API: `Authorization: Bearer gft_...`."""
from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from .models import ApiToken, hash_token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        raw = header[1].decode(errors="replace")
        token = ApiToken.objects.select_related("user").filter(digest=hash_token(raw), revoked=False).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        if token.expired:
            raise exceptions.AuthenticationFailed("This API token has expired; create a new one on the Tokens page.")
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class TokenScopePermission(permissions.BasePermission):
    """A read-only token may only read (GET, HEAD, OPTIONS); sessions and read-write tokens pass."""

    message = "This API token is read-only: it may only read (GET, HEAD, OPTIONS)."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        return not (isinstance(token, ApiToken) and token.read_only) or request.method in permissions.SAFE_METHODS
