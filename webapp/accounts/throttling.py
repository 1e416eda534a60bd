"""API rate limits (DRF throttles), rates from settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].

Counters live in the "throttle" cache (Redis), shared by every web process. Rates are read per
request, not at import, so a changed setting takes effect (and tests can override them).
"""
from __future__ import annotations

import logging

from django.core.cache import caches
from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.settings import api_settings

from .models import ApiToken

log = logging.getLogger(__name__)


class _Rates:
    cache_alias = "throttle"

    @property
    def cache(self):
        return caches[self.cache_alias]

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        # Redis unreachable: serve the request unthrottled rather than fail the whole API (the
        # pages that need Redis say so themselves).
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            log.warning("API throttle %s skipped, Redis unavailable: %s", self.scope, exc)
            return True


class AnonThrottle(_Rates, throttling.AnonRateThrottle):
    """Anonymous requests, by client address."""


class UserThrottle(_Rates, throttling.UserRateThrottle):
    """All requests of one signed-in user, session and tokens together."""

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class TokenThrottle(_Rates, throttling.SimpleRateThrottle):
    """Each API token on its own (a script's token cannot use up its owner's whole budget)."""

    scope = "token"

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
