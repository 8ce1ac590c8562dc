"""Overload shedding for the providers' webhooks: a clear, retryable 503 instead of a queue nobody answers.

Daphne runs each synchronous request on a thread of its own and accepts as many as arrive. Past what the
database can take, every request waits on the others (and on the connection pool), and at ten times capacity
almost none is answered within Twilio's 15 s. Webhooks are idempotent and the provider retries them, so a
request that cannot start soon is better refused at once: when WEBHOOK_MAX_IN_FLIGHT webhooks are already being
handled in this process, the next one is answered 503 with Retry-After on the event loop, without a thread, a
database connection or reading its body. What is answered 200 is stored; what is refused stored nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/webhooks/"
# At most one log line per this many seconds while shedding, with the count refused since the last one.
_LOG_EVERY_SECONDS = 5.0


class ShedWebhookOverload:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight = 0
        self.refused = 0
        self._logged_at = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or not scope.get("path", "").startswith(WEBHOOK_PREFIX):
            return await self.app(scope, receive, send)
        if self.in_flight >= settings.WEBHOOK_MAX_IN_FLIGHT:
            await self._refuse(send)
            return None
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Any) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            logger.warning("webhooks shed: %s refused with 503 (%s in flight)", self.refused, self.in_flight)
            self._logged_at = now
            self.refused = 0
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"retry-after", str(settings.WEBHOOK_RETRY_AFTER_SECONDS).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"Busy: nothing was stored; retry later."})
