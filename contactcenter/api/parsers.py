"""The API's JSON parser: DRF's, refusing what would otherwise reach PostgreSQL and become a 500.

JSON may spell a lone UTF-16 surrogate ("\\ud800"); json.loads turns it into a str that psycopg cannot
encode. DRF's CharField refuses those (and NUL) field by field, but a DictField's keys, a JSONField's
values or a ListField's items reached the database and failed there. They are refused here, for every view
at once, with a 400 naming the field by its path ("identities.0.value"). A document nested deeper than
Python's stack (json.loads raises RecursionError, which DRF does not catch) is a 400 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from contactcenter.boundary import unstorable_path

LONE_SURROGATE = "Lone UTF-16 surrogates (\\ud800-\\udfff without their pair) are not allowed."


class StorableJSONParser(JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        where = unstorable_path(data)
        if where is not None:
            raise ParseError({where or "non_field_errors": [LONE_SURROGATE]})
        return data
