"""The one pagination of every API list: `limit` and `offset`, checked before they reach the database.

DRF's LimitOffsetPagination quietly replaces a `limit` it cannot read with the default, passes any `offset`
through, and has no maximum: `limit=9223372036854775808` reached PostgreSQL as a LIMIT beyond bigint and came
back as a 500. Here nonsense (not a whole number, negative, zero `limit`, beyond bigint) is a 400 naming the
parameter, and a `limit` above API_MAX_PAGE_SIZE is served as that many.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.settings import api_settings

# The largest value PostgreSQL's LIMIT/OFFSET (bigint) take, and our ids too.
BIGINT_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


def whole_number(raw: str, field: str, *, minimum: int, maximum: int = BIGINT_MAX) -> int:
    """A query parameter that must be a plain whole number in [minimum, maximum]; a 400 naming it otherwise.

    Only ASCII digits: Python's int() would also take "1_000", " 7" and other scripts' digits.
    """
    value = raw.strip()
    if len(value) > 1 and value.isascii() and value.isdigit():
        value = value.lstrip("0") or "0"
    if value.startswith("-") and _DIGITS.fullmatch(value[1:]):
        raise serializers.ValidationError({field: [f"Must be at least {minimum}."]})
    if not _DIGITS.fullmatch(value):
        if value.isascii() and value.isdigit():
            raise serializers.ValidationError({field: [f"Must be at most {maximum}."]})
        raise serializers.ValidationError({field: ["Must be a whole number."]})
    number = int(value)
    if number < minimum:
        raise serializers.ValidationError({field: [f"Must be at least {minimum}."]})
    if number > maximum:
        raise serializers.ValidationError({field: [f"Must be at most {maximum}."]})
    return number


class Pagination(LimitOffsetPagination):
    """?limit= (1 and up, served as at most API_MAX_PAGE_SIZE; default PAGE_SIZE) and ?offset= (0 and up)."""

    def __init__(self) -> None:
        # Read per request, not at import: the settings (and tests' overrides) decide.
        self.default_limit: int = int(api_settings.PAGE_SIZE or 50)
        self.max_limit: int = int(settings.API_MAX_PAGE_SIZE)

    def get_limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param, "")
        if raw == "":
            return self.default_limit
        return min(whole_number(raw, self.limit_query_param, minimum=1), self.max_limit)

    def get_offset(self, request: Request) -> int:
        raw = request.query_params.get(self.offset_query_param, "")
        if raw == "":
            return 0
        return whole_number(raw, self.offset_query_param, minimum=0)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        # Both parameters are checked before the count query, so a bad one costs nothing.
        self.get_offset(request)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update(minimum=1, maximum=BIGINT_MAX)
                parameter["description"] = (
                    f"Rows per page (default {self.default_limit}; at most {self.max_limit} are served)."
                )
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update(minimum=0, maximum=BIGINT_MAX)
        return parameters
