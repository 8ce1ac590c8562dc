"""Schemathesis over the staff API's OpenAPI schema, in process, on the test PostgreSQL: never a 5xx.

The schema is the one drf-spectacular serves at /api/v1/schema/ (a test below ties the two). Every operation
in it is one pytest item: schemathesis generates requests from the schema (valid and invalid bodies, query
strings and path values, with its coverage phase's boundary values) and sends them through Django's real WSGI
handler as the demo admin, with an API token. The only check is "not a server error".

The data is a small demo hospital (contactcenter.demo), seeded once for the module and removed after it. Each
operation runs in its own transaction, rolled back at the end, so what one operation changes (a merge, a
deleted segment, a cancelled campaign) never reaches another; and the transaction never commits, so nothing
is delivered anywhere. No operation is excluded for being destructive for that reason. Path ids are half
the time a real row's id, so the handlers behind the 404 are fuzzed too.

Bounded: a handful of examples per operation, derandomized (the same inputs every run), no shrinking;
throttling is switched off through the settings (the throttles read their rates when used).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

import channels_adapters.twilio.transport
from callbacks.actions.recovery import open_manual_case
from callbacks.models import CallbackTask, Discharge, ServiceCase
from campaigns.actions.campaigns import create_campaign
from campaigns.actions.segments import save_segment
from campaigns.models import Campaign, Segment
from contactcenter.demo import seed_demo
from contactcenter.models import Conversation, Inbox, Patient
from tests.twilio_fake import RecordingTwilioHttpClient

EXAMPLES_PER_OPERATION = 12
RAW_SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True, no_shrink=True)
# Besides random inputs, the coverage phase's boundary values: numbers past int64, strings past maxLength,
# dates that are not dates, missing and unexpected fields.
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
# Django answers a method a view does not have with 405 before any of our code runs: not worth the requests.
schema.config.phases.coverage.unexpected_methods = set()
HIS_TOKEN = "his-fuzz-token-0123456789abcdef"

# Path parameters filled, half the time, with a real row's id; the queryset for each.
REAL_IDS: dict[str, Any] = {
    "patient_id": lambda: Patient.objects.values_list("pk", flat=True),
    "conversation_id": lambda: Conversation.objects.values_list("pk", flat=True),
    "campaign_id": lambda: Campaign.objects.values_list("pk", flat=True),
    "segment_id": lambda: Segment.objects.values_list("pk", flat=True),
    "task_id": lambda: CallbackTask.objects.values_list("pk", flat=True),
    "case_id": lambda: ServiceCase.objects.values_list("pk", flat=True),
    "encounter_id": lambda: Discharge.objects.values_list("pk", flat=True),
    "visit_number": lambda: Discharge.objects.values_list("visit_number", flat=True),
}
# Status codes each operation answered in this run, for the check that the fuzzing got past the door.
ANSWERED: dict[str, set[int]] = {}
CONVERSATION_ACTIONS = ["assign", "resolve", "reopen", "pending", "snooze", "labels", "priority", "read"]


@pytest.fixture(scope="module")
def hospital(django_db_setup: Any, django_db_blocker: Any) -> Iterator[dict[str, list[Any]]]:
    """The demo hospital, committed for this module's operations and flushed after them."""
    with django_db_blocker.unblock(), pytest.MonkeyPatch.context() as patch:
        # The seed's replies go to a recording Twilio, not the simulator (whose status callbacks would come
        # back over HTTP from threads, into a server that is not listening).
        patch.setattr(channels_adapters.twilio.transport, "http_client", RecordingTwilioHttpClient)
        seeded = seed_demo(patients=40, rng_seed=13)
        assert "skipped" not in seeded, "the test database must be empty when this module starts"
        admin = get_user_model().objects.get(username="admin")
        segment = save_segment(
            segment=None,
            name="Cardiology patients",
            rules={"op": "and", "rules": [{"field": "region", "operator": "in", "value": ["Tianhe"]}]},
            actor=admin,
        )
        inbox = Inbox.objects.filter(channel_type="sms").first() or Inbox.objects.first()
        assert inbox is not None
        create_campaign(actor=admin, name="Spring check-up", segment=segment, inbox=inbox, body="体检套餐八折。")
        discharge = Discharge.objects.select_related("patient").first()
        assert discharge is not None
        open_manual_case(
            patient=discharge.patient, summary="Waited two hours", category="other", actor=admin, discharge=discharge
        )
        ids = {name: [str(v) for v in rows()[:20]] for name, rows in REAL_IDS.items()}
        ids["action"] = CONVERSATION_ACTIONS
        ids["token"] = [Token.objects.create(user=admin).key]
        try:
            yield ids
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def wsgi_app(db: Any, settings_override: None) -> Iterator[WSGIHandler]:
    """Django's real WSGI handler inside the test's transaction. Like the test client, it must not close the
    connection at the end of each request (that would end the transaction the test rolls back)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def settings_override(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES") or {}),
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.HIS_API_TOKEN = HIS_TOKEN


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_with_a_server_error(
    case: schemathesis.Case, hospital: dict[str, list[Any]], wsgi_app: WSGIHandler
) -> None:
    for name, value in list((case.path_parameters or {}).items()):
        # Half the generated values stand for a real row, picked by the value itself (so still derandomized;
        # @schema.given would switch the coverage phase off).
        real, pick = hospital.get(name), _pick(value)
        if real and pick % 2 == 0:
            case.path_parameters[name] = real[pick // 2 % len(real)]
    body: dict[str, Any] = {}
    if case.media_type == "application/json" and isinstance(case.body, dict | list | str) and _pick(case.body) % 4 == 0:
        # Schemathesis never generates lone surrogates; a JSON body may spell them ("\\ud800"), so a quarter
        # of the JSON bodies carry one in a string or a key (sent in place of the generated body).
        body["json"] = _with_lone_surrogate(case.body)
    # The HIS API takes the HIS's bearer token, everything else a staff member's API token.
    his = case.path.startswith("/api/v1/his/")
    authorization = f"Bearer {HIS_TOKEN}" if his else f"Token {hospital['token'][0]}"
    response = case.call_and_validate(
        app=wsgi_app,
        base_url="http://testserver",
        headers={"Authorization": authorization},
        checks=[not_a_server_error],
        **body,
    )
    ANSWERED.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def _pick(value: object) -> int:
    return zlib.crc32(repr(value).encode())


def _with_lone_surrogate(body: Any) -> Any:
    """The body with its first string (or, in an object without strings, its first key) ending in U+D800."""
    if isinstance(body, str):
        return body + "\ud800"
    if isinstance(body, list):
        return [_with_lone_surrogate(body[0]), *body[1:]] if body else body
    if isinstance(body, dict) and body:
        for key, value in body.items():
            if isinstance(value, str | list | dict) and _with_lone_surrogate(value) != value:
                return {**body, key: _with_lone_surrogate(value)}
        first = next(iter(body))
        return {(k + "\udc00" if k == first else k): v for k, v in body.items()}
    return body


def test_the_fuzzed_schema_is_the_one_served_to_staff(hospital: dict[str, list[Any]], wsgi_app: WSGIHandler) -> None:
    from django.test import Client

    response = Client().get("/api/v1/schema/", {"format": "json"}, HTTP_AUTHORIZATION=f"Token {hospital['token'][0]}")
    assert response.status_code == 200, response.content[:300]
    assert sorted(response.json()["paths"]) == sorted(RAW_SCHEMA["paths"])


def test_every_fuzzed_operation_got_past_authentication() -> None:
    """Runs after the operations above: each answered something besides 401/403, so the requests reached the
    views' own code (a wrong token would have made every "not a server error" check pass trivially)."""
    refused_only = sorted(op for op, codes in ANSWERED.items() if codes <= {401, 403})
    assert refused_only == []
    assert any(code < 300 for codes in ANSWERED.values() for code in codes) or not ANSWERED
