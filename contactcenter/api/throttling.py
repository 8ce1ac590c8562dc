"""API rate limits per kind of caller (rates in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]).

Each request is counted by exactly one of these: a staff member per user, an integration that authenticates
without a staff user (the HIS bearer token) per kind of credential, anyone else per client IP. Over the rate
DRF answers 429 with Retry-After.
"""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from contactcenter.layers import LAYER_ERRORS

logger = logging.getLogger(__name__)


class _Throttle(SimpleRateThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        # The counts live in the cache (Redis in production). A Redis restart must not turn an agent's reply into
        # a 500 that loses it: for those seconds the request is let through unthrottled, and logged.
        try:
            return bool(super().allow_request(request, view))
        except LAYER_ERRORS as exc:
            logger.warning(
                "API throttle %s: cache unreachable (%s); request let through", self.scope, type(exc).__name__
            )
            return True

    def get_rate(self) -> str | None:
        # Read when used, not when the class is imported as DRF does: rates change with the settings (tests).
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(str(self.scope))
        return str(rate) if rate else None

    def get_ident(self, request: Request) -> str:
        # REMOTE_ADDR as Daphne reports it (behind the TLS proxy, --proxy-headers sets it from X-Forwarded-For).
        # DRF's own ident would trust a client's X-Forwarded-For as sent, and a new value per request would dodge
        # the limit.
        return str(request.META.get("REMOTE_ADDR") or "unknown")


class StaffRateThrottle(_Throttle):
    scope = "staff"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class IntegrationRateThrottle(_Throttle):
    """A machine caller with a credential but no staff user, e.g. the HIS's bearer token (batch loads)."""

    scope = "integration"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if (request.user and request.user.is_authenticated) or request.auth is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": type(request.auth).__name__}


class AnonymousRateThrottle(_Throttle):
    scope = "anonymous"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if (request.user and request.user.is_authenticated) or request.auth is not None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
