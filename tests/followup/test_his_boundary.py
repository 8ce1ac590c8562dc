"""What PostgreSQL refuses, sent by the HIS on every way in: NUL bytes, lone surrogates, over-long values.

SQLite stores all of these; PostgreSQL rejects NUL in text and jsonb, cannot encode a lone UTF-16
surrogate (a JSON body's "\\ud800") and refuses values longer than their column. Each entry point cleans at
the boundary (contactcenter.boundary): free text is kept (U+FFFD for what cannot be stored, cut to its
column), ids and codes that cannot be valid are refused naming the field. Never a 500, nothing half-stored.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import hl7
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks.actions.hl7_intake import accept_hl7
from callbacks.models import Discharge, IntakeMessage, IntakeOutcome
from contactcenter.models import Patient, Team
from tests.conftest import PASSWORD, World

TOKEN = "his-test-token-1234567890"
URL = "/api/v1/his/discharges/"
FHIR_URL = "/api/v1/his/fhir/Encounter"
FIXTURES = Path(__file__).resolve().parents[2] / "callbacks" / "intake" / "fixtures"
SURROGATE = "\ud800"


@pytest.fixture(autouse=True)
def on_postgresql(db: Any, settings: Any) -> None:
    # The point of these tests: SQLite would store every one of these values and prove nothing.
    assert connection.vendor == "postgresql"
    settings.HIS_API_TOKEN = TOKEN
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def his() -> APIClient:
    Team.objects.create(code="cardiology", name="Cardiology")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def discharge_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visit_number": "V-B-1",
        "mrn": "MRN-B-1",
        "name": "Wang Fang",
        "phone": "13800138000",
        "department_code": "cardiology",
        "ward": "5A",
        "discharged_at": (timezone.now() - dt.timedelta(hours=3)).isoformat(),
        "diagnoses": [{"code": "I21.4", "text": "NSTEMI"}],
    }
    body.update(overrides)
    return body


def post(client: APIClient, body: Any, url: str = URL, **extra: Any) -> Any:
    # json.dumps writes a lone surrogate as the escape "\ud800", exactly as a buggy HIS would send it.
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def nothing_stored() -> bool:
    return not Discharge.objects.exists() and not Patient.objects.exists()


# --- REST -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\x00", SURROGATE], ids=["nul", "surrogate"])
def test_rest_free_text_with_unstorable_characters_is_kept_readable(his: APIClient, bad: str) -> None:
    response = post(
        his,
        discharge_json(
            name=f"Wang{bad}Fang",
            ward=f"5{bad}A",
            attending_doctor=f"Dr{bad}",
            diagnoses=[{"code": "I21.4", "text": f"NSTEMI{bad}"}],
            **{f"x{bad}": "an unknown key"},
        ),
    )
    assert response.status_code == 201, response.content
    discharge = Discharge.objects.get()
    assert discharge.patient.name == "Wang\ufffdFang"
    assert (discharge.ward, discharge.attending_doctor) == ("5\ufffdA", "Dr\ufffd")
    assert discharge.diagnoses[0]["text"] == "NSTEMI\ufffd"
    # The trail keeps the body as sent, made storable.
    assert json.loads(IntakeMessage.objects.get().raw)["visit_number"] == "V-B-1"


@pytest.mark.parametrize("bad", ["\x00", SURROGATE, "\x07"], ids=["nul", "surrogate", "bell"])
@pytest.mark.parametrize("field", ["visit_number", "department_code", "disposition_code"])
def test_rest_ids_with_control_characters_are_400_naming_the_field(his: APIClient, bad: str, field: str) -> None:
    response = post(his, discharge_json(**{field: f"V{bad}1"}))
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert nothing_stored()
    trail = IntakeMessage.objects.get()
    assert trail.outcome == IntakeOutcome.ERROR and field in trail.error


@pytest.mark.parametrize(
    "overrides",
    [
        {"mrn": f"MRN{SURROGATE}"},
        {"mrn": "MRN\x00"},
        {"sex": f"m{SURROGATE}"},
        {"disposition": f"home{SURROGATE}"},
        {"diagnoses": [{"code": f"I21{SURROGATE}"}]},
        {"discharged_at": f"2026-11-20T10:00:00{SURROGATE}"},
    ],
    ids=["mrn-surrogate", "mrn-nul", "sex", "disposition", "diagnosis-code", "time"],
)
def test_rest_values_echoed_in_errors_never_turn_a_400_into_a_500(his: APIClient, overrides: dict[str, Any]) -> None:
    response = post(his, discharge_json(**overrides))
    assert response.status_code == 400, response.content
    assert set(overrides) <= set(response.json())
    assert nothing_stored()


def test_rest_over_long_values_ids_refused_free_text_cut(his: APIClient) -> None:
    too_long = post(his, discharge_json(visit_number="V" * 61))
    assert too_long.status_code == 400 and "visit_number" in too_long.json()
    code = post(his, discharge_json(department_code="c" * 41))
    assert code.status_code == 400 and "department_code" in code.json()
    assert nothing_stored()

    kept = post(his, discharge_json(name="N" * 500, ward="W" * 500, attending_doctor="D" * 500, phone="1" * 500))
    assert kept.status_code == 201, kept.content
    discharge = Discharge.objects.get()
    assert (discharge.patient.name, discharge.ward, discharge.attending_doctor) == ("N" * 200, "W" * 60, "D" * 120)
    # A phone that long is no phone: kept as written (cut), flagged for a nurse, the discharge stored.
    assert (discharge.phone_as_sent, discharge.phone_needs_review) == ("1" * 80, True)


def test_rest_batch_keeps_good_items_when_one_holds_a_surrogate(his: APIClient) -> None:
    response = post(
        his,
        [discharge_json(visit_number="V-B-2", mrn="MRN-B-2"), discharge_json(visit_number=f"V{SURROGATE}", mrn="M3")],
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["created", "rejected"]
    assert body["results"][1]["visit_number"] == "V\ufffd"
    assert list(Discharge.objects.values_list("visit_number", flat=True)) == ["V-B-2"]


@pytest.mark.parametrize("key", ["K\x00", f"K{SURROGATE}", "K" * 101], ids=["nul", "surrogate", "long"])
def test_rest_bad_idempotency_key_is_400(his: APIClient, key: str) -> None:
    response = post(his, discharge_json(), HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()
    assert nothing_stored()


def test_rest_cancel_of_a_visit_number_with_a_nul_is_400(his: APIClient) -> None:
    assert post(his, discharge_json()).status_code == 201
    response = post(his, {"reason": f"entered in error{SURROGATE}"}, url=f"{URL}V-B-1%00/cancel/")
    assert response.status_code == 400 and "visit_number" in response.json()
    assert Discharge.objects.get().status == "active"
    cancelled = post(his, {"reason": "entered\x00in error"}, url=f"{URL}V-B-1/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    assert Discharge.objects.get().cancel_reason == "entered\ufffdin error"


def test_rest_demographics_clean_names_and_refuse_a_bad_mrn(his: APIClient) -> None:
    assert post(his, discharge_json()).status_code == 201
    url = "/api/v1/his/patients/demographics/"
    renamed = post(his, {"mrn": "MRN-B-1", "name": f"Wang{SURROGATE}Fang Fang"}, url=url)
    assert renamed.status_code == 200, renamed.content
    assert Patient.objects.get().name == "Wang\ufffdFang Fang"
    bad = post(his, {"mrn": "MRN-B-1\x00", "name": "X"}, url=url)
    assert bad.status_code == 400 and "mrn" in bad.json()


# --- FHIR -------------------------------------------------------------------------------------------


def encounter(**overrides: Any) -> dict[str, Any]:
    resource = json.loads((FIXTURES / "fhir_encounter_update.json").read_text())
    resource["period"]["end"] = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    resource["serviceType"] = {"coding": [{"code": "cardiology"}]}
    resource.update(overrides)
    return resource


def post_fhir(client: APIClient, body: Any) -> Any:
    return client.post(FHIR_URL, data=json.dumps(body), content_type="application/fhir+json")


@pytest.mark.parametrize("bad", ["\x00", SURROGATE], ids=["nul", "surrogate"])
def test_fhir_free_text_is_kept_and_the_resource_echoed_back_encodes(his: APIClient, bad: str) -> None:
    resource = encounter(location=[{"location": {"display": f"Ward{bad}3"}}])
    resource["contained"][0]["name"] = [{"text": f"John{bad}Smith"}]
    response = post_fhir(his, resource)
    assert response.status_code == 201, response.content
    discharge = Discharge.objects.get()
    assert (discharge.patient.name, discharge.ward) == ("John\ufffdSmith", "Ward\ufffd3")
    assert response.json()["contained"][0]["name"][0]["text"] == "John\ufffdSmith"


@pytest.mark.parametrize(
    ("overrides", "expression"),
    [
        ({"identifier": [{"use": "official", "value": f"V{SURROGATE}"}]}, "Encounter.identifier"),
        ({"identifier": [{"use": "official", "value": "V\x00"}]}, "Encounter.identifier"),
        ({"identifier": [{"use": "official", "value": "V" * 61}]}, "Encounter.identifier"),
        ({"subject": {"identifier": {"value": f"MRN{SURROGATE}"}}}, "Encounter.subject"),
        ({"serviceType": {"coding": [{"code": "car\x00"}]}}, "Encounter.serviceType"),
        ({"serviceType": {"coding": [{"code": "c" * 41}]}}, "Encounter.serviceType"),
        (
            {"hospitalization": {"dischargeDisposition": {"coding": [{"code": f"home{SURROGATE}"}]}}},
            "Encounter.hospitalization.dischargeDisposition",
        ),
    ],
)
def test_fhir_ids_that_cannot_be_valid_are_a_400_operation_outcome(
    his: APIClient, overrides: dict[str, Any], expression: str
) -> None:
    response = post_fhir(his, encounter(**overrides))
    assert response.status_code == 400, response.content
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expression in [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert nothing_stored()
    assert IntakeMessage.objects.get().outcome == IntakeOutcome.ERROR


def test_fhir_a_status_with_a_surrogate_is_answered_not_crashed(his: APIClient) -> None:
    response = post_fhir(his, encounter(status=f"finished{SURROGATE}"))
    assert response.status_code == 422
    assert "finished\ufffd" in response.json()["issue"][0]["diagnostics"]
    assert nothing_stored()


# --- HL7 v2 -----------------------------------------------------------------------------------------


def minimal(**replacements: bytes) -> bytes:
    raw = (FIXTURES / "adt_a03_minimal.hl7").read_bytes()
    for old, new in replacements.items():
        assert old.encode() in raw
        raw = raw.replace(old.encode(), new)
    return raw


def ack(raw: bytes) -> hl7.Message:
    return hl7.parse(accept_hl7(raw).decode("ascii"))


def msa(message: hl7.Message, field: int) -> str:
    return str(message.segment("MSA").extract_field(1, field))


def test_hl7_free_text_with_a_nul_is_kept_readable() -> None:
    answer = ack(minimal(LIN=b"L\x00IN", ORTHO3B=b"ORTHO\x003B"))
    assert msa(answer, 1) == "AA"
    discharge = Discharge.objects.get()
    assert (discharge.patient.name, discharge.ward) == ("HAO L\ufffdIN", "ORTHO\ufffd3B")


@pytest.mark.parametrize(
    ("replacements", "location"),
    [
        ({"V20250310002": b"V2025\x0003"}, "PV1-19"),
        ({"V20250310002": b"V" * 61}, "PV1-19"),
        ({"|ORTH|": b"|OR\x00TH|"}, "PV1-10"),
        ({"|ORTH|": b"|" + b"O" * 41 + b"|"}, "PV1-10"),
        ({"MRN2000001": b"MRN\x002000001"}, "PID-3"),
        ({"MSG20250315120000002": b"MSG\x00202503"}, "MSH-10"),
        ({"MSG20250315120000002": b"M" * 101}, "MSH-10"),
    ],
)
def test_hl7_ids_that_cannot_be_valid_are_ae_naming_the_field(replacements: dict[str, bytes], location: str) -> None:
    answer = ack(minimal(**replacements))
    assert msa(answer, 1) == "AE"
    assert msa(answer, 3).startswith(location)
    err = answer.segment("ERR")
    assert str(err.extract_field(1, 2, 1, 1)) == location.split("-")[0]
    assert nothing_stored()
    trail = IntakeMessage.objects.get()
    assert trail.outcome == IntakeOutcome.ERROR and "\x00" not in trail.raw and "\x00" not in trail.control_id


def test_hl7_over_long_free_text_is_cut_and_a_nul_in_a_diagnosis_text_kept() -> None:
    raw = minimal(ORTHO3B=b"W" * 300) + b"DG1|1|I10|S72.0^Fracture\x00 of femur^I10||20250310|F\r"
    assert msa(ack(raw), 1) == "AA"
    discharge = Discharge.objects.get()
    assert discharge.ward == "W" * 60
    assert discharge.diagnoses == [{"code": "S72.0", "text": "Fracture\ufffd of femur", "system": "I10"}]


def test_hl7_a_diagnosis_code_with_a_nul_is_ae() -> None:
    answer = ack(minimal() + b"DG1|1|I10|S72\x00^Fracture^I10||20250310|F\r")
    assert msa(answer, 1) == "AE" and msa(answer, 3).startswith("DG1-3")
    assert nothing_stored()


# --- CSV --------------------------------------------------------------------------------------------


def test_csv_rows_with_bad_ids_are_rejected_and_free_text_kept(world: World) -> None:
    client = Client()
    assert client.login(username="sam", password=PASSWORD)
    content = "\n".join(
        [
            "visit_number,mrn,name,department_code,ward,discharged_at",
            "V-C-1,MRN-C-1,Wang\x00Fang,cardiology,5\x00A,2026-11-20 10:00",
            "V-C\x00-2,MRN-C-2,Li Lei,cardiology,5A,2026-11-20 10:00",
            f"V-C-3,MRN-C-3,Zhao Yun,{'c' * 41},5A,2026-11-20 10:00",
            f"V-C-4,MRN-C-4,{'n' * 300},cardiology,{'w' * 300},2026-11-20 10:00",
        ]
    )
    response = client.post(
        "/followup/discharges/", {"file": SimpleUploadedFile("d.csv", content.encode(), content_type="text/csv")}
    )
    assert response.status_code == 200
    assert set(Discharge.objects.values_list("visit_number", flat=True)) == {"V-C-1", "V-C-4"}
    first = Discharge.objects.get(visit_number="V-C-1")
    assert (first.patient.name, first.ward) == ("Wang\ufffdFang", "5\ufffdA")
    last = Discharge.objects.get(visit_number="V-C-4")
    assert (last.patient.name, last.ward) == ("n" * 200, "w" * 60)
    html = response.content.decode()
    assert html.count('data-testid="import-error-row"') == 2
    assert "control characters" in html and "longer than 40" in html
