"""HIS department codes: an unknown code never creates a department; it waits, listed, until someone maps it.

Before: PV1-10 "CAR" became a new department "car", so cardiology's plans and nurses never saw the patient.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks.actions.departments import department_for_code, map_department_code
from callbacks.actions.hl7_intake import accept_hl7
from callbacks.defaults import CARDIOLOGY_PLAN_NAME, CATCH_ALL_PLAN_NAME, install_default_plans
from callbacks.models import (
    UNMAPPED_DEPARTMENT_CODE,
    CallbackTask,
    DepartmentCodeMapping,
    Discharge,
    FollowUpPlan,
    StepKind,
    TaskStatus,
)
from contactcenter.models import Team
from tests.conftest import PASSWORD, World

TOKEN = "his-test-token-1234567890"
FIXTURES = Path(__file__).resolve().parents[2] / "callbacks" / "intake" / "fixtures"
PAGE = "/followup/discharges/"
MAP_URL = "/followup/discharges/departments/"


@pytest.fixture(autouse=True)
def his_token(settings: Any) -> None:
    settings.HIS_API_TOKEN = TOKEN
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def his(world: World) -> APIClient:
    install_default_plans()  # finds the world's cardiology by its code
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def signed_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def rest_discharge(his: APIClient, visit: str, code: str = "CAR", **extra: Any) -> Discharge:
    body = {
        "visit_number": visit,
        "mrn": f"MRN-{visit}",
        "phone": "13800138000",
        "department_code": code,
        "department_name": "Cardiology (HIS)",
        "discharged_at": (timezone.now() - dt.timedelta(hours=2)).isoformat(),
        "diagnoses": [{"code": "I50.9"}],
        **extra,
    }
    response = his.post("/api/v1/his/discharges/", data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 201), response.content
    return Discharge.objects.select_related("department").get(visit_number=visit)


def plans_of(discharge: Discharge) -> set[str]:
    tasks = CallbackTask.objects.filter(discharge=discharge).exclude(status=TaskStatus.CANCELLED)
    return {t.step.plan.name for t in tasks.select_related("step__plan") if t.step is not None}


def test_an_unknown_code_creates_no_department_and_still_gets_the_default_follow_up(
    his: APIClient, world: World
) -> None:
    teams_before = set(Team.objects.values_list("code", flat=True))

    discharge = rest_discharge(his, "V-CAR-1")

    assert set(Team.objects.values_list("code", flat=True)) - teams_before <= {UNMAPPED_DEPARTMENT_CODE}
    assert not Team.objects.filter(code__iexact="car").exists()
    assert (discharge.department.code, discharge.his_department_code) == (UNMAPPED_DEPARTMENT_CODE, "CAR")
    assert discharge.his_department_name == "Cardiology (HIS)"
    # The plan that names no department covers it meanwhile.
    assert plans_of(discharge) == {CATCH_ALL_PLAN_NAME}


def test_an_hl7_pv1_10_nobody_mapped_waits_unmapped(db: Any) -> None:
    ack = accept_hl7((FIXTURES / "adt_a03_us_patient.hl7").read_bytes())
    assert b"MSA|AA|" in ack
    discharge = Discharge.objects.get(visit_number="V20250315012")
    assert (discharge.department.code, discharge.his_department_code) == (UNMAPPED_DEPARTMENT_CODE, "CAR")
    assert not Team.objects.filter(code__iexact="car").exists()


def test_a_department_whose_own_code_is_sent_still_matches_directly(his: APIClient, world: World) -> None:
    discharge = rest_discharge(his, "V-CARD-1", code="CARDIOLOGY")
    assert discharge.department == world.team_a
    assert plans_of(discharge) == {CARDIOLOGY_PLAN_NAME}


def test_unmapped_codes_are_listed_and_mapping_one_reroutes_its_discharges(his: APIClient, world: World) -> None:
    first = rest_discharge(his, "V-CAR-1")
    second = rest_discharge(his, "V-CAR-2")
    rest_discharge(his, "V-ICU-1", code="ICU")
    page = signed_in("sam").get(PAGE)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-code="CAR"' in html and 'data-code="ICU"' in html
    assert html.index('data-code="CAR"') < html.index('data-code="ICU"')  # most waiting first
    # A nurse of cardiology does not see the unmapped discharges' calls yet.
    nurse = APIClient()
    nurse.force_login(world.nina)
    upcoming = nurse.get("/api/v1/followup/tasks/", {"view": "upcoming"}).json()
    assert upcoming["count"] == 0

    response = signed_in("sam").post(MAP_URL, {"system": "", "code": "CAR", "department": world.team_a.pk})

    assert response.status_code == 302
    assert "rerouted=2" in response["Location"]
    for discharge in (first, second):
        discharge.refresh_from_db()
        assert discharge.department == world.team_a
        assert discharge.visit.department == world.team_a
        tasks = CallbackTask.objects.filter(discharge=discharge)
        assert {t.department_id for t in tasks} == {world.team_a.pk}
        # Untouched steps follow cardiology's own plan now.
        assert plans_of(discharge) == {CARDIOLOGY_PLAN_NAME}
    calls = CallbackTask.objects.filter(discharge__in=[first, second], kind="call", status=TaskStatus.SCHEDULED)
    assert calls.count() >= 4
    assert nurse.get("/api/v1/followup/tasks/", {"view": "upcoming"}).json()["count"] == calls.count()
    listed = signed_in("sam").get(response["Location"]).content.decode()
    assert 'data-code="CAR"' not in listed and 'data-code="ICU"' in listed
    assert 'data-testid="mapping-done"' in listed
    # What the HIS sends next under that code goes straight to the department.
    assert rest_discharge(his, "V-CAR-3", code="car").department == world.team_a


def test_a_discharge_no_plan_covered_gets_its_department_plan_once_mapped(world: World) -> None:
    # Only a cardiology plan: an unmapped discharge matches nothing at first.
    plan = FollowUpPlan.objects.create(name="Cardiology only", department=world.team_a)
    plan.steps.create(position=1, kind=StepKind.CALL, offset_days=1, business_days=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    discharge = rest_discharge(client, "V-CAR-9")
    assert not CallbackTask.objects.filter(discharge=discharge).exists()

    result = map_department_code(system="", code="car", department=world.team_a, actor=world.ada)  # type: ignore[arg-type]

    assert (result.created, result.rerouted) == (True, 1)
    assert plans_of(discharge) == {"Cardiology only"}


def test_a_code_system_mapping_wins_over_a_mapping_for_any_system(world: World) -> None:
    map_department_code(system="", code="0301", department=world.team_b)
    map_department_code(system="urn:his:dept", code="0301", department=world.team_a)
    assert department_for_code("0301", "urn:his:dept") == world.team_a
    assert department_for_code("0301", "urn:other") == world.team_b
    assert department_for_code("0301") == world.team_b
    assert department_for_code("9999") is None


def test_a_fhir_service_type_is_listed_with_its_system_and_mapped(his: APIClient, world: World) -> None:
    encounter = json.loads((FIXTURES / "fhir_encounter_update.json").read_text())
    encounter["period"]["end"] = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    encounter["serviceType"] = {"coding": [{"system": "urn:his:dept", "code": "0301", "display": "心内科"}]}
    response = his.post("/api/v1/his/fhir/Encounter", data=json.dumps(encounter), content_type="application/fhir+json")
    assert response.status_code == 201, response.content
    html = signed_in("ada").get(PAGE).content.decode()
    assert 'data-code="0301"' in html and "urn:his:dept" in html and "心内科" in html

    signed_in("ada").post(MAP_URL, {"system": "urn:his:dept", "code": "0301", "department": world.team_a.pk})

    assert Discharge.objects.get(visit_number="V20261120031").department == world.team_a


@pytest.mark.parametrize("username", ["nina", "alice", "mark"])
def test_only_supervisors_and_admins_map_codes(his: APIClient, world: World, username: str) -> None:
    rest_discharge(his, "V-CAR-1")
    response = signed_in(username).post(MAP_URL, {"system": "", "code": "CAR", "department": world.team_a.pk})
    assert response.status_code == 403
    assert not DepartmentCodeMapping.objects.exists()
    assert Discharge.objects.get().department.code == UNMAPPED_DEPARTMENT_CODE


def test_the_mapping_form_refuses_the_unmapped_department_itself(his: APIClient, world: World) -> None:
    discharge = rest_discharge(his, "V-CAR-1")
    response = signed_in("sam").post(MAP_URL, {"system": "", "code": "CAR", "department": discharge.department_id})
    assert response.status_code == 400
    assert 'data-testid="mapping-errors"' in response.content.decode()
    assert not DepartmentCodeMapping.objects.exists()


def test_admins_map_codes_in_the_django_admin_and_it_reroutes(his: APIClient, world: World, client: Client) -> None:
    from django.contrib.auth.models import User

    discharge = rest_discharge(his, "V-CAR-1")
    client.force_login(User.objects.create_superuser("it-admin", password=PASSWORD))
    assert client.get("/django-admin/callbacks/departmentcodemapping/").status_code == 200
    response = client.post(
        "/django-admin/callbacks/departmentcodemapping/add/",
        {"system": "", "code": "CAR", "department": world.team_a.pk},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    discharge.refresh_from_db()
    assert discharge.department == world.team_a
    # A second mapping of the same code, in another letter case, is refused by the unique constraint.
    again = client.post(
        "/django-admin/callbacks/departmentcodemapping/add/",
        {"system": "", "code": "car", "department": world.team_b.pk},
    )
    assert again.status_code == 200 and "already mapped" in again.content.decode()
    assert DepartmentCodeMapping.objects.get().department == world.team_a


def test_a_csv_department_name_without_a_code_waits_to_be_mapped(world: World) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    content = (FIXTURES / "discharges_his_export.csv").read_bytes()
    sam = signed_in("sam")
    response = sam.post(PAGE, {"file": SimpleUploadedFile("his.csv", content, content_type="text/csv")})
    assert response.status_code == 200
    assert set(Discharge.objects.values_list("department__code", "his_department_code")) == {
        (UNMAPPED_DEPARTMENT_CODE, "CAR")
    }
    sam.post(MAP_URL, {"system": "", "code": "CAR", "department": world.team_a.pk})
    assert set(Discharge.objects.values_list("department_id", flat=True)) == {world.team_a.pk}
