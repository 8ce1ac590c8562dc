"""Every API list pages with `limit`/`offset` checked at the door: nonsense is a 400 naming the parameter, a
limit above API_MAX_PAGE_SIZE is served as that many, and nothing reaches PostgreSQL beyond bigint (a 500).

The lists are found in the URL conf, so a list added later is covered without touching this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.generics import GenericAPIView
from rest_framework.test import APIClient

from contactcenter.api.pagination import BIGINT_MAX
from contactcenter.models import Patient
from tests.conftest import World


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def paginated_list_urls() -> list[str]:
    """GET endpoints of DRF list views that page (a pagination class), from the URL conf."""
    urls = []
    for route, callback in _routes(get_resolver().url_patterns):
        view = getattr(callback, "cls", None)
        if view and issubclass(view, GenericAPIView) and view.pagination_class is not None and hasattr(view, "get"):
            assert "<" not in route, f"{route}: give this test an id for its path parameter"
            urls.append("/" + route)
    return sorted(urls)


LIST_URLS = paginated_list_urls()

NONSENSE = [
    ("limit", str(2**63)),
    ("limit", "99999999999999999999999999"),
    ("limit", "-1"),
    ("limit", "0"),
    ("limit", "ten"),
    ("limit", "1.5"),
    ("limit", "1_0"),
    ("limit", "１０"),  # full-width digits: int() would take them
    ("limit", "²"),
    ("limit", "1e3"),
    ("offset", str(2**63)),
    ("offset", "-1"),
    ("offset", "x"),
    ("offset", "\x00"),
]


def test_the_url_conf_lists_the_known_paginated_lists() -> None:
    # The enumeration must find real lists, or every test below would pass on nothing.
    assert {
        "/api/v1/patients/",
        "/api/v1/conversations/",
        "/api/v1/audit/",
        "/api/v1/followup/tasks/",
        "/api/v1/followup/cases/",
        "/api/v1/campaigns/",
        "/api/v1/campaigns/segments/",
    } <= set(LIST_URLS)


@pytest.fixture
def ada(world: World) -> APIClient:
    """The admin: allowed on every list."""
    client = APIClient()
    client.force_authenticate(user=world.ada)
    return client


@pytest.mark.parametrize(("name", "value"), NONSENSE, ids=[f"{n}={v!r}" for n, v in NONSENSE])
@pytest.mark.parametrize("url", LIST_URLS)
def test_nonsense_paging_parameters_are_400_naming_the_field(ada: APIClient, url: str, name: str, value: str) -> None:
    response = ada.get(url, {name: value})

    assert response.status_code == 400, (url, name, value, response.status_code)
    assert list(response.json()) == [name]


@pytest.mark.parametrize("url", LIST_URLS)
def test_the_largest_values_are_served_not_refused(ada: APIClient, url: str) -> None:
    response = ada.get(url, {"limit": str(BIGINT_MAX), "offset": str(BIGINT_MAX)})

    assert response.status_code == 200, (url, response.content)
    assert response.json()["results"] == []


@pytest.mark.parametrize("url", LIST_URLS)
def test_pages_still_work(ada: APIClient, url: str) -> None:
    response = ada.get(url, {"limit": "2", "offset": "0"})

    assert response.status_code == 200
    assert set(response.json()) == {"count", "next", "previous", "results"}


def test_a_limit_above_the_maximum_is_served_as_the_maximum(world: World, ada: APIClient, settings: Any) -> None:
    settings.API_MAX_PAGE_SIZE = 2
    for n in range(3):
        Patient.objects.create(name=f"Patient {n}")

    response = ada.get("/api/v1/patients/", {"limit": "1000"})

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], len(body["results"])) == (3, 2)
    assert "limit=2" in body["next"]


def test_without_a_limit_a_page_is_page_size(world: World, ada: APIClient, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "PAGE_SIZE": 2}
    for n in range(3):
        Patient.objects.create(name=f"Patient {n}")

    first, rest = ada.get("/api/v1/patients/").json(), ada.get("/api/v1/patients/", {"offset": "2"}).json()

    assert (len(first["results"]), len(rest["results"])) == (2, 1)
    assert "limit=2" in first["next"]


# Lists that read their own paging or id parameters (not the pagination class).
CUSTOM = [
    ("/api/v1/conversations/{conversation}/messages/", "limit", str(2**63)),
    ("/api/v1/conversations/{conversation}/messages/", "before", str(2**63)),
    ("/api/v1/conversations/{conversation}/messages/", "before", "-5"),
    ("/api/v1/audit/", "patient", "²"),
    ("/api/v1/audit/", "patient", str(2**63)),
    ("/api/v1/audit/", "patient", "-1"),
    ("/api/v1/followup/cases/", "assignee", "²"),
]


@pytest.mark.parametrize(("template", "name", "value"), CUSTOM)
def test_custom_paging_and_filter_parameters_are_400_naming_the_field(
    world: World, inbound: Any, ada: APIClient, template: str, name: str, value: str
) -> None:
    conversation = inbound(world.inbox_a, "+8613900000001", "Hello").conversation

    response = ada.get(template.format(conversation=conversation.pk), {name: value})

    assert response.status_code == 400, response.content
    assert list(response.json()) == [name]


def test_a_patient_search_for_a_digit_that_is_no_number_is_a_text_search(world: World, ada: APIClient) -> None:
    response = ada.get("/api/v1/patients/", {"q": "²"})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_the_audit_page_ignores_a_patient_filter_that_is_no_number(world: World) -> None:
    from django.test import Client

    client = Client()
    client.force_login(world.ada)

    assert client.get("/audit/", {"patient": "²"}).status_code == 200


def test_the_schema_describes_the_bounds(ada: APIClient) -> None:
    schema = ada.get("/api/v1/schema/", {"format": "json"}).json()
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/audit/"]["get"]["parameters"]}

    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX}
    assert parameters["offset"] == {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
