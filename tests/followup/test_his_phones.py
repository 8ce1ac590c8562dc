"""A discharge is never refused for its phone number.

Before: an A03 whose PID-13 was `^PRN^PH^^^610^5532781` (no country code; the patient's address in the US)
was read in the hospital's region (CN), failed, and was refused whole: that patient got no follow-up at all.
Now the number is read from the XTN parts in the address's country; one that still cannot be read is kept
as written, the follow-up is planned as calls, and the worklist asks a nurse to check the number.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks import plans
from callbacks.actions.discharges import DischargeResult
from callbacks.defaults import install_default_plans
from callbacks.intake.mllp import END_BLOCK, ListenerThread, frame
from callbacks.models import CallbackTask, Discharge, IntakeMessage, StepKind, TaskKind, TaskStatus
from contactcenter.models import AuditLogEntry, IdentityKind, PatientIdentity
from tests.conftest import PASSWORD, World

TOKEN = "his-test-token-1234567890"
FIXTURES = Path(__file__).resolve().parents[2] / "callbacks" / "intake" / "fixtures"
MakeDischarge = Callable[..., DischargeResult]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def phones_of(discharge: Discharge) -> set[str]:
    return set(
        PatientIdentity.objects.filter(patient=discharge.patient, kind=IdentityKind.PHONE).values_list(
            "value", flat=True
        )
    )


# --- HL7 over MLLP ----------------------------------------------------------------------------------


@pytest.fixture
def mllp(transactional_db: Any) -> Iterator[Callable[[bytes], bytes]]:
    thread = ListenerThread(host="127.0.0.1", port=0, idle_timeout=30)
    address = thread.start()
    import socket

    sock = socket.create_connection(address, timeout=20)

    def exchange(message: bytes) -> bytes:
        sock.sendall(frame(message))
        data = b""
        while END_BLOCK not in data:
            chunk = sock.recv(65536)
            assert chunk, "the listener closed the connection"
            data += chunk
        return data[1 : data.index(END_BLOCK)]

    yield exchange
    sock.close()
    thread.stop()


@pytest.mark.django_db(transaction=True)
def test_a_us_patients_a03_without_a_country_code_is_accepted(mllp: Callable[[bytes], bytes]) -> None:
    ack = mllp((FIXTURES / "adt_a03_us_patient.hl7").read_bytes())

    assert b"\rMSA|AA|MSG20250318094500012" in ack
    discharge = Discharge.objects.get(visit_number="V20250315012")
    # PID-13 ^PRN^PH^^^610^5532781 read in PID-11's country (USA).
    assert phones_of(discharge) == {"+16105532781"}
    assert (discharge.phone_as_sent, discharge.phone_region, discharge.phone_needs_review) == (
        "610 5532781",
        "US",
        False,
    )


@pytest.mark.django_db(transaction=True)
def test_an_a03_whose_phone_cannot_be_read_is_stored_with_the_phone_flagged(mllp: Callable[[bytes], bytes]) -> None:
    ack = mllp((FIXTURES / "adt_a03_unreadable_phone.hl7").read_bytes())

    assert b"\rMSA|AA|MSG20250318100000013" in ack
    discharge = Discharge.objects.get(visit_number="V20250316013")
    assert (discharge.phone_as_sent, discharge.phone_needs_review) == ("5532781", True)
    assert phones_of(discharge) == set()
    assert IntakeMessage.objects.get().outcome == "AA"


# --- Planning and the worklist ----------------------------------------------------------------------


@pytest.fixture
def defaults(world: World) -> None:
    install_default_plans()


def test_an_unreadable_phone_plans_calls_instead_of_the_sms_survey(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    # The patient had a good mobile from an earlier stay; this stay's number is unreadable, so nobody texts.
    make_discharge(mrn="MRN-P-1", phone="+8613800138000")
    discharge = make_discharge(mrn="MRN-P-1", phone="5532781").discharge

    assert discharge.phone_needs_review
    tasks = list(CallbackTask.objects.filter(discharge=discharge).select_related("step").order_by("step__position"))
    survey_step = next(t for t in tasks if t.step is not None and t.step.kind == StepKind.SMS_SURVEY)
    assert (survey_step.kind, survey_step.plan_note) == (TaskKind.CALL, plans.NOTE_PHONE_REVIEW)
    assert all(t.kind == TaskKind.CALL for t in tasks)


def nurse_api(world: World) -> APIClient:
    client = APIClient()
    client.force_login(world.nina)
    return client


def test_the_worklist_flags_the_phone_and_a_nurse_corrects_it(
    defaults: None, world: World, make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(mrn="MRN-P-2", phone="5532781", discharged_at=timezone.now() - dt.timedelta(hours=1))
    first_call = CallbackTask.objects.filter(discharge=discharge.discharge, step__position=1).get()
    api = nurse_api(world)

    rows = api.get("/api/v1/followup/tasks/", {"view": "upcoming"}).json()["results"]
    assert {row["phone_needs_review"] for row in rows} == {True}
    detail = api.get(f"/api/v1/followup/tasks/{first_call.pk}/").json()
    assert (detail["phone_needs_review"], detail["discharge"]["phone_as_sent"]) == (True, "5532781")
    assert detail["patient"]["phone"] == ""

    refused = api.post(f"/api/v1/followup/tasks/{first_call.pk}/phone/", {"phone": "12"}, format="json")
    assert refused.status_code == 400 and "phone" in refused.json()

    fixed = api.post(f"/api/v1/followup/tasks/{first_call.pk}/phone/", {"phone": "010 6552 7781"}, format="json")

    assert fixed.status_code == 200, fixed.content
    assert fixed.json()["phone_needs_review"] is False
    saved = Discharge.objects.get(pk=discharge.discharge.pk)
    assert saved.phone_needs_review is False and saved.phone_as_sent == "5532781"
    assert phones_of(saved) == {"+861065527781"}
    assert api.get(f"/api/v1/followup/tasks/{first_call.pk}/").json()["patient"]["phone"] == "+861065527781"
    entry = AuditLogEntry.objects.get(action="update_patient", object_id=str(first_call.pk))
    assert (entry.actor_id, entry.patient_id, entry.detail) == (world.nina.pk, saved.patient_id, {"field": "phone"})


def test_a_corrected_mobile_brings_the_sms_survey_back(
    defaults: None, world: World, make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(mrn="MRN-P-3", phone="5532781", discharged_at=timezone.now() - dt.timedelta(hours=1))
    survey_step = CallbackTask.objects.get(discharge=discharge.discharge, step__kind=StepKind.SMS_SURVEY)
    assert survey_step.kind == TaskKind.CALL

    response = nurse_api(world).post(
        f"/api/v1/followup/tasks/{survey_step.pk}/phone/", {"phone": "13900139000"}, format="json"
    )

    assert response.status_code == 200, response.content
    # No longer a call: the worklist's answer says so, and the step leaves the nurses' list.
    assert response.json()["kind"] == TaskKind.SMS_SURVEY
    survey_step.refresh_from_db()
    assert (survey_step.kind, survey_step.status, survey_step.plan_note) == (
        TaskKind.SMS_SURVEY,
        TaskStatus.SCHEDULED,
        "",
    )


def test_a_nurse_cannot_take_another_patients_number(
    defaults: None, world: World, make_discharge: MakeDischarge
) -> None:
    make_discharge(mrn="MRN-P-4", phone="+8613900139001")
    flagged = make_discharge(mrn="MRN-P-5", phone="5532781").discharge
    task = CallbackTask.objects.filter(discharge=flagged, kind=TaskKind.CALL).first()
    assert task is not None
    response = nurse_api(world).post(
        f"/api/v1/followup/tasks/{task.pk}/phone/", {"phone": "13900139001"}, format="json"
    )
    assert response.status_code == 400 and "another patient" in json.dumps(response.json())
    assert Discharge.objects.get(pk=flagged.pk).phone_needs_review is True


def test_a_nurse_of_another_department_cannot_correct_the_phone(
    defaults: None, world: World, make_discharge: MakeDischarge
) -> None:
    flagged = make_discharge(mrn="MRN-P-6", phone="5532781").discharge
    task = CallbackTask.objects.filter(discharge=flagged, kind=TaskKind.CALL).first()
    assert task is not None
    from tests.conftest import make_staff

    outsider = make_staff("olga", "nurse", [world.team_b])
    client = APIClient()
    client.force_login(outsider)
    assert (
        client.post(f"/api/v1/followup/tasks/{task.pk}/phone/", {"phone": "13900139000"}, format="json").status_code
        == 404
    )
    assert Discharge.objects.get(pk=flagged.pk).phone_needs_review is True


# --- REST, FHIR, CSV --------------------------------------------------------------------------------


@pytest.fixture
def his(world: World, settings: Any) -> APIClient:
    settings.HIS_API_TOKEN = TOKEN
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def rest(his: APIClient, **fields: Any) -> Any:
    body = {
        "visit_number": "V-R-1",
        "mrn": "MRN-R-1",
        "department_code": "cardiology",
        "discharged_at": (timezone.now() - dt.timedelta(hours=2)).isoformat(),
        **fields,
    }
    return his.post("/api/v1/his/discharges/", data=json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("country", ["US", "USA", "United States", "840"])
def test_rest_reads_the_phone_in_the_addresses_country(his: APIClient, country: str) -> None:
    response = rest(his, phone="(610) 553-2781", country=country)
    assert response.status_code == 201, response.content
    assert response.json()["phone_needs_review"] is False
    assert phones_of(Discharge.objects.get()) == {"+16105532781"}


def test_rest_stores_a_discharge_whose_phone_cannot_be_read(his: APIClient) -> None:
    response = rest(his, phone="(610) 553-2781")  # no country: read as Chinese, it is no number
    assert response.status_code == 201, response.content
    assert response.json()["phone_needs_review"] is True
    assert Discharge.objects.get().phone_as_sent == "(610) 553-2781"


def test_fhir_reads_telecom_in_the_patients_address_country(his: APIClient) -> None:
    encounter = json.loads((FIXTURES / "fhir_encounter_update.json").read_text())
    encounter["period"]["end"] = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    response = his.post("/api/v1/his/fhir/Encounter", data=json.dumps(encounter), content_type="application/fhir+json")
    assert response.status_code == 201, response.content
    discharge = Discharge.objects.get()
    assert phones_of(discharge) == {"+16105532781"} and discharge.phone_region == "US"


def test_csv_reads_the_country_column_and_flags_what_it_cannot_read(world: World) -> None:
    client = Client()
    assert client.login(username="sam", password=PASSWORD)
    content = (FIXTURES / "discharges_his_export.csv").read_bytes()
    response = client.post(
        "/followup/discharges/", {"file": SimpleUploadedFile("his.csv", content, content_type="text/csv")}
    )
    assert response.status_code == 200
    us = Discharge.objects.get(visit_number="V20261120041")
    assert phones_of(us) == {"+16105532781"} and not us.phone_needs_review
    unreadable = Discharge.objects.get(visit_number="V20261120042")
    assert (unreadable.phone_as_sent, unreadable.phone_needs_review) == ("5532781", True)
