"""The HIS's REST and FHIR intake: bearer token, idempotent on the visit number, clear errors, nothing half-stored."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks.models import Discharge, DischargeStatus, Disposition, IntakeMessage, IntakeOutcome, IntakeSource
from contactcenter.models import Gender, IdentityKind, Patient, PatientIdentity, Team

TOKEN = "his-test-token-1234567890"
URL = "/api/v1/his/discharges/"
FHIR_URL = "/api/v1/his/fhir/Encounter"


@pytest.fixture(autouse=True)
def his_token(settings: Any) -> None:
    settings.HIS_API_TOKEN = TOKEN


@pytest.fixture
def cardiology(db: Any) -> Team:
    # The hospital's department whose own code the HIS sends.
    return Team.objects.create(code="cardiology", name="Cardiology")


@pytest.fixture
def his(cardiology: Team) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def discharge_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visit_number": "V20261120001",
        "mrn": "MRN000123",
        "name": "王芳",
        "birth_date": "1958-03-14",
        "sex": "female",
        "phone": "13800138000",
        "department_code": "cardiology",
        "department_name": "Cardiology",
        "ward": "5A",
        "attending_doctor": "Dr. Wang",
        "primary_nurse": "Nurse Li",
        "disposition": "home",
        "admitted_at": "2026-11-15T09:00:00+08:00",
        "discharged_at": (timezone.now() - dt.timedelta(hours=3)).isoformat(),
        "diagnoses": [{"code": "I21.4", "text": "NSTEMI", "system": "I10"}],
    }
    body.update(overrides)
    return body


def post(client: APIClient, body: Any, **extra: Any) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


# --- Authentication ---------------------------------------------------------------------------------


def test_a_call_without_a_token_is_401_and_stores_nothing(db: Any) -> None:
    response = post(APIClient(), discharge_json())
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Discharge.objects.exists()
    assert not IntakeMessage.objects.exists()


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer his-test-token", f"Token {TOKEN}", "Bearer "])
def test_a_wrong_token_is_refused_and_stores_nothing(db: Any, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = post(client, discharge_json())
    assert response.status_code == 401
    assert not Discharge.objects.exists()
    assert not Patient.objects.exists()
    assert not IntakeMessage.objects.exists()


def test_a_staff_session_is_not_the_his(world: Any) -> None:
    client = APIClient()
    client.force_login(world.ada)
    assert post(client, discharge_json()).status_code == 401
    assert not Discharge.objects.exists()


def test_without_a_configured_token_the_api_answers_503(his: APIClient, settings: Any) -> None:
    settings.HIS_API_TOKEN = ""
    response = post(his, discharge_json())
    assert response.status_code == 503
    assert "HIS API not configured" in response.json()["detail"]
    assert not Discharge.objects.exists()


# --- One discharge ----------------------------------------------------------------------------------


def test_a_new_discharge_is_201_and_stored_with_everything_the_his_said(his: APIClient) -> None:
    response = post(his, discharge_json(), HTTP_IDEMPOTENCY_KEY="MSG-0001")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] is True and body["changed"] == [] and body["visit_number"] == "V20261120001"
    assert isinstance(body["tasks"], list)
    discharge = Discharge.objects.get(pk=body["id"])
    assert discharge.source == IntakeSource.REST
    assert discharge.department.code == "cardiology"
    assert discharge.ward == "5A" and discharge.attending_doctor == "Dr. Wang" and discharge.primary_nurse == "Nurse Li"
    assert discharge.diagnosis_codes == ["I21.4"]
    patient = discharge.patient
    assert patient.name == "王芳" and patient.gender == Gender.FEMALE and patient.birth_date == dt.date(1958, 3, 14)
    assert PatientIdentity.objects.filter(patient=patient, kind=IdentityKind.PHONE, value="+8613800138000").exists()
    message = IntakeMessage.objects.get()
    assert (message.source, message.outcome, message.control_id) == (
        IntakeSource.REST,
        IntakeOutcome.ACCEPTED,
        "MSG-0001",
    )
    assert message.discharge_id == discharge.pk and json.loads(message.raw)["visit_number"] == "V20261120001"


def test_a_resend_is_200_and_says_what_changed(his: APIClient) -> None:
    body = discharge_json()
    assert post(his, body).status_code == 201
    same = post(his, body)
    assert same.status_code == 200 and same.json()["changed"] == [] and same.json()["created"] is False
    moved = post(his, {**body, "ward": "6B", "disposition": "transferred"})
    assert moved.status_code == 200
    assert set(moved.json()["changed"]) >= {"ward", "disposition"}
    assert Discharge.objects.count() == 1
    assert Discharge.objects.get().disposition == Disposition.TRANSFERRED


def test_the_his_code_decides_the_disposition_when_ours_is_missing(his: APIClient) -> None:
    body = discharge_json(disposition_code="20")
    del body["disposition"]
    assert post(his, body).status_code == 201
    discharge = Discharge.objects.get()
    assert (discharge.disposition, discharge.disposition_code) == (Disposition.EXPIRED, "20")


def test_sex_as_the_his_writes_it(his: APIClient) -> None:
    assert post(his, discharge_json(sex="男")).status_code == 201
    assert Discharge.objects.get().patient.gender == Gender.MALE


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"visit_number": ""}, "visit_number", "blank"),
        ({"mrn": "no spaces allowed"}, "mrn", "medical record number"),
        ({"sex": "x"}, "sex", "Unknown sex"),
        ({"disposition": "gone"}, "disposition", "not a valid choice"),
        ({"discharged_at": "2026-11-20T14:30:00"}, "discharged_at", "UTC offset"),
        ({"discharged_at": "yesterday"}, "discharged_at", "format"),
        ({"discharged_at": "2099-01-01T00:00:00+08:00"}, "discharged_at", "future"),
        ({"department_code": ""}, "department_code", "blank"),
        ({"diagnoses": [{"text": "no code"}]}, "diagnoses", "required"),
        ({"visit_number": "V\x00001"}, "visit_number", "control characters"),
        ({"visit_number": "V" * 61}, "visit_number", "60"),
    ],
)
def test_field_errors_are_400_with_messages_and_nothing_is_stored(
    his: APIClient, overrides: dict[str, Any], field: str, words: str
) -> None:
    response = post(his, discharge_json(**overrides))
    assert response.status_code == 400, response.content
    assert words in json.dumps(response.json()[field], ensure_ascii=False)
    assert not Discharge.objects.exists()
    assert not Patient.objects.exists()
    message = IntakeMessage.objects.get()
    assert message.outcome == IntakeOutcome.ERROR and field in message.error


def test_a_body_that_is_neither_object_nor_array_is_400(his: APIClient) -> None:
    response = post(his, "V1")
    assert response.status_code == 400
    assert "JSON object" in response.json()["non_field_errors"][0]


def test_malformed_json_is_400(his: APIClient) -> None:
    response = his.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert not Discharge.objects.exists()


def test_an_overlong_idempotency_key_is_400(his: APIClient) -> None:
    response = post(his, discharge_json(), HTTP_IDEMPOTENCY_KEY="k" * 101)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()
    assert not Discharge.objects.exists()


# --- Batches ----------------------------------------------------------------------------------------


def test_a_batch_keeps_good_items_and_reports_bad_ones_by_index(his: APIClient) -> None:
    known = discharge_json(visit_number="V-KNOWN")
    post(his, known)
    batch = [
        discharge_json(visit_number="V-1", mrn="MRN1"),
        discharge_json(visit_number="V-2", mrn="MRN2", phone="not a phone"),
        {**known, "ward": "7C"},
        "not an object",
        discharge_json(visit_number="V-3", mrn="MRN3", discharged_at="2026-11-20 14:30"),
    ]
    response = post(his, batch, HTTP_IDEMPOTENCY_KEY="BATCH-7")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["received"], body["created"], body["updated"], body["rejected"]) == (5, 2, 1, 2)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    # A phone that cannot be read never rejects a discharge: it is stored with the phone flagged.
    assert statuses == [(0, "created"), (1, "created"), (2, "updated"), (3, "rejected"), (4, "rejected")]
    assert Discharge.objects.get(visit_number="V-2").phone_needs_review is True
    assert "UTC offset" in body["results"][4]["errors"]["discharged_at"][0]
    assert body["results"][2]["changed"] == ["ward"]
    assert set(Discharge.objects.values_list("visit_number", flat=True)) == {"V-KNOWN", "V-1", "V-2"}
    control_ids = set(IntakeMessage.objects.exclude(control_id="").values_list("control_id", "outcome"))
    assert ("BATCH-7#0", IntakeOutcome.ACCEPTED) in control_ids and ("BATCH-7#4", IntakeOutcome.ERROR) in control_ids


def test_a_batch_over_500_is_refused_whole(his: APIClient) -> None:
    batch = [discharge_json(visit_number=f"V-{n}") for n in range(501)]
    response = post(his, batch)
    assert response.status_code == 400
    assert "at most 500" in response.json()["non_field_errors"][0]
    assert not Discharge.objects.exists()


def test_an_empty_batch_is_400(his: APIClient) -> None:
    assert post(his, []).status_code == 400


# --- Cancel and demographics ------------------------------------------------------------------------


def test_cancel_cancels_a_known_discharge(his: APIClient) -> None:
    post(his, discharge_json())
    response = his.post(f"{URL}V20261120001/cancel/", {"reason": "admission cancelled"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == DischargeStatus.CANCELLED
    discharge = Discharge.objects.get()
    assert discharge.status == DischargeStatus.CANCELLED and discharge.cancel_reason == "admission cancelled"
    assert IntakeMessage.objects.filter(message_type="cancel", outcome=IntakeOutcome.ACCEPTED).count() == 1


def test_cancel_of_an_unknown_visit_is_404(his: APIClient) -> None:
    response = his.post(f"{URL}V-NOBODY/cancel/", {}, format="json")
    assert response.status_code == 404
    assert "V-NOBODY" in response.json()["detail"]
    assert IntakeMessage.objects.get().outcome == IntakeOutcome.ERROR


def test_cancel_needs_the_token(his: APIClient) -> None:
    post(his, discharge_json())
    assert APIClient().post(f"{URL}V20261120001/cancel/", {}, format="json").status_code == 401
    assert Discharge.objects.get().status == DischargeStatus.ACTIVE


def test_demographics_update_a_known_patient(his: APIClient) -> None:
    post(his, discharge_json())
    response = his.post(
        "/api/v1/his/patients/demographics/",
        {"mrn": "mrn000123", "name": "王芳芳", "sex": "F", "phone": "13900139000"},
        format="json",
    )
    assert response.status_code == 200, response.content
    patient = Patient.objects.get(pk=response.json()["patient_id"])
    assert patient.name == "王芳芳"
    assert PatientIdentity.objects.filter(patient=patient, value="+8613900139000").exists()


def test_demographics_of_an_unknown_patient_is_404_with_a_clear_message(his: APIClient) -> None:
    response = his.post("/api/v1/his/patients/demographics/", {"mrn": "MRN999", "name": "Nobody"}, format="json")
    assert response.status_code == 404
    assert "MRN999" in response.json()["detail"] and "send their discharge first" in response.json()["detail"]
    assert not Patient.objects.exists()


def test_demographics_with_a_bad_phone_is_400(his: APIClient) -> None:
    post(his, discharge_json())
    response = his.post("/api/v1/his/patients/demographics/", {"mrn": "MRN000123", "phone": "abc"}, format="json")
    assert response.status_code == 400 and "phone" in response.json()


# --- FHIR Encounter ---------------------------------------------------------------------------------


def encounter(**overrides: Any) -> dict[str, Any]:
    end = (timezone.now() - dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [
                    {"system": "urn:oid:1.2.3", "value": "ID-CARD-1"},
                    {"type": {"coding": [{"code": "MR"}]}, "value": "MRN777"},
                ],
                "name": [{"family": "李", "given": ["雷"]}],
                "gender": "male",
                "birthDate": "1950-02-03",
                "telecom": [
                    {"system": "phone", "use": "home", "value": "020-12345678"},
                    {"system": "phone", "use": "mobile", "value": "13700137000"},
                ],
            },
            {
                "resourceType": "Condition",
                "id": "c1",
                "code": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.9", "display": "Heart failure"}
                    ]
                },
            },
        ],
        "identifier": [
            {"use": "secondary", "value": "ACC-1"},
            {"use": "official", "system": "urn:his:visit", "value": "ENC-1001"},
        ],
        "subject": {"reference": "#p1"},
        "period": {"start": "2026-11-10T08:00:00+08:00", "end": end.isoformat()},
        "serviceType": {"coding": [{"code": "cardiology", "display": "Cardiology"}]},
        "location": [{"location": {"display": "Ward 5A"}}],
        "participant": [
            {"type": [{"coding": [{"code": "ADM"}]}], "individual": {"display": "Dr. Admit"}},
            {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"display": "Dr. Zhao"}},
        ],
        "diagnosis": [{"condition": {"reference": "#c1"}}],
        "hospitalization": {"dischargeDisposition": {"coding": [{"code": "snf"}]}},
    }
    resource.update(overrides)
    return resource


def post_fhir(client: APIClient, body: Any, content_type: str = "application/fhir+json") -> Any:
    return client.post(FHIR_URL, data=json.dumps(body), content_type=content_type)


def test_a_finished_encounter_is_a_discharge(his: APIClient) -> None:
    response = post_fhir(his, encounter())
    assert response.status_code == 201, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    discharge = Discharge.objects.get()
    assert response.json()["id"] == str(discharge.pk)
    assert response["Location"].endswith(f"/api/v1/his/fhir/Encounter/{discharge.pk}")
    assert discharge.visit_number == "ENC-1001" and discharge.source == IntakeSource.FHIR
    assert (discharge.disposition, discharge.disposition_code) == (Disposition.TRANSFERRED, "snf")
    assert discharge.ward == "Ward 5A" and discharge.attending_doctor == "Dr. Zhao"
    assert discharge.department.code == "cardiology"
    assert discharge.diagnoses == [{"code": "I50.9", "text": "Heart failure", "system": "I10"}]
    patient = discharge.patient
    assert patient.name == "李雷" and patient.gender == Gender.MALE and patient.birth_date == dt.date(1950, 2, 3)
    assert PatientIdentity.objects.filter(patient=patient, kind=IdentityKind.MRN, value="MRN777").exists()
    assert PatientIdentity.objects.filter(patient=patient, kind=IdentityKind.PHONE, value="+8613700137000").exists()
    assert IntakeMessage.objects.get().source == IntakeSource.FHIR


def test_the_same_encounter_again_is_200_and_plain_json_works_too(his: APIClient) -> None:
    assert post_fhir(his, encounter()).status_code == 201
    again = post_fhir(his, encounter(location=[{"location": {"display": "Ward 6"}}]), "application/json")
    assert again.status_code == 200
    assert Discharge.objects.get().ward == "Ward 6"


def test_subject_identifier_alone_is_enough(his: APIClient) -> None:
    resource = encounter(subject={"identifier": {"value": "MRN888"}, "display": "Han Meimei"}, contained=[])
    assert post_fhir(his, resource).status_code == 201
    assert Discharge.objects.get().patient.name == "Han Meimei"


@pytest.mark.parametrize("state", ["in-progress", "planned", "arrived", ""])
def test_an_unfinished_encounter_is_422_with_an_operation_outcome(his: APIClient, state: str) -> None:
    response = post_fhir(his, encounter(status=state))
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["expression"] == ["Encounter.status"]
    assert "only a finished encounter is a discharge" in issue["diagnostics"]
    assert not Discharge.objects.exists()


def test_missing_parts_are_all_reported_at_once(his: APIClient) -> None:
    response = post_fhir(his, encounter(period={"start": "2026-11-10T08:00:00+08:00"}, identifier=[], serviceType={}))
    assert response.status_code == 422
    issues = response.json()["issue"]
    expressions = {i["expression"][0] for i in issues}
    # serviceType is optional in R4: its absence is no issue.
    assert expressions == {"Encounter.identifier", "Encounter.period.end"}
    assert all(i["code"] == "required" for i in issues)
    assert not Discharge.objects.exists() and not Patient.objects.exists()
    assert IntakeMessage.objects.get().outcome == IntakeOutcome.ERROR


@pytest.mark.parametrize(
    ("overrides", "expression"),
    [
        ({"period": {"end": "2026-11-20"}}, "Encounter.period.end"),
        (
            {"hospitalization": {"dischargeDisposition": {"coding": [{"code": "moon"}]}}},
            "Encounter.hospitalization.dischargeDisposition",
        ),
        ({"subject": {"reference": "#nobody"}}, "Encounter.subject"),
    ],
)
def test_invalid_values_are_422_naming_the_element(his: APIClient, overrides: dict[str, Any], expression: str) -> None:
    response = post_fhir(his, encounter(**overrides))
    assert response.status_code == 422
    assert expression in [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert not Discharge.objects.exists()


def test_a_telecom_that_cannot_be_read_is_stored_flagged_not_refused(his: APIClient) -> None:
    contained = encounter()["contained"]
    contained[0]["telecom"] = [{"system": "phone", "value": "12"}]
    response = post_fhir(his, encounter(contained=contained))
    assert response.status_code == 201, response.content
    discharge = Discharge.objects.get()
    assert (discharge.phone_as_sent, discharge.phone_needs_review) == ("12", True)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        ["Encounter"],
        {"resourceType": "Encounter", "status": "finished", "identifier": [{"value": "A\u0000"}]},
    ],
)
def test_what_is_not_an_encounter_is_400(his: APIClient, body: Any) -> None:
    response = post_fhir(his, body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert not Discharge.objects.exists()


def test_unparseable_json_is_an_operation_outcome(his: APIClient) -> None:
    response = his.post(FHIR_URL, data="{", content_type="application/fhir+json")
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "structure"


def test_fhir_without_the_token_is_401_operation_outcome(db: Any) -> None:
    response = post_fhir(APIClient(), encounter())
    assert response.status_code == 401
    assert response.json()["issue"][0]["code"] == "login"
    assert not Discharge.objects.exists() and not IntakeMessage.objects.exists()


@pytest.mark.parametrize("state", ["cancelled", "entered-in-error"])
def test_a_cancelled_encounter_cancels_the_discharge(his: APIClient, state: str) -> None:
    assert post_fhir(his, encounter()).status_code == 201
    response = post_fhir(his, encounter(status=state))
    assert response.status_code == 200, response.content
    assert Discharge.objects.get().status == DischargeStatus.CANCELLED


def test_cancelling_an_unknown_encounter_is_404(his: APIClient) -> None:
    response = post_fhir(his, encounter(status="cancelled"))
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_the_location_of_a_created_encounter_can_be_read_back_without_names(his: APIClient) -> None:
    created = post_fhir(his, encounter())
    response = his.get(created["Location"])
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "Encounter" and body["id"] == created.json()["id"]
    assert body["identifier"][0]["value"] == "ENC-1001" and body["status"] == "finished"
    assert "李雷" not in response.content.decode()
    assert APIClient().get(created["Location"]).status_code == 401
    missing = his.get("/api/v1/his/fhir/Encounter/999999")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"


# --- A later message updates what it carries ---------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "callbacks" / "intake" / "fixtures"


def fhir_update() -> dict[str, Any]:
    """A real-shaped Encounter for a visit the REST API reported first: no serviceType, no participant, no
    location, and its diagnosis a Condition on the HIS's own server (nothing we can read)."""
    resource: dict[str, Any] = json.loads((FIXTURES / "fhir_encounter_update.json").read_text())
    resource["period"]["end"] = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    return resource


def test_a_fhir_encounter_after_rest_leaves_what_it_does_not_carry(his: APIClient) -> None:
    first = post(
        his,
        discharge_json(
            visit_number="V20261120031",
            mrn="MRN8000031",
            diagnoses=[{"code": "I21.4", "text": "NSTEMI"}, {"code": "E11.9"}],
            disposition="transferred",
        ),
    )
    assert first.status_code == 201, first.content

    response = post_fhir(his, fhir_update())

    assert response.status_code == 200, response.content
    discharge = Discharge.objects.get()
    assert discharge.diagnosis_codes == ["I21.4", "E11.9"]
    assert discharge.department.code == "cardiology"
    assert (discharge.ward, discharge.attending_doctor, discharge.primary_nurse) == ("5A", "Dr. Wang", "Nurse Li")
    # What it does carry is applied: the disposition, the time, the patient's name.
    assert (discharge.disposition, discharge.disposition_code) == (Disposition.HOME, "home")
    assert discharge.patient.name == "John Q Smith"
    assert set(response.json()) >= {"id", "resourceType"}


def test_a_new_encounter_without_service_type_is_stored_to_be_mapped(his: APIClient) -> None:
    response = post_fhir(his, fhir_update())
    assert response.status_code == 201, response.content
    discharge = Discharge.objects.get()
    assert (discharge.department.code, discharge.his_department_code) == ("his-unmapped", "")
    assert (discharge.ward, discharge.diagnoses, discharge.disposition) == ("", [], Disposition.HOME)


def test_a_rest_resend_keeps_absent_fields_and_clears_empty_ones(his: APIClient) -> None:
    full = discharge_json()
    assert post(his, full).status_code == 201
    slim = {k: v for k, v in full.items() if k in ("visit_number", "mrn", "department_code", "discharged_at")}

    kept = post(his, slim)

    assert kept.status_code == 200 and kept.json()["changed"] == []
    discharge = Discharge.objects.get()
    assert (discharge.ward, discharge.diagnosis_codes, discharge.disposition) == ("5A", ["I21.4"], Disposition.HOME)
    assert discharge.visit.admitted_at == dt.datetime.fromisoformat("2026-11-15T09:00:00+08:00")

    cleared = post(his, {**slim, "ward": "", "diagnoses": []})
    assert set(cleared.json()["changed"]) == {"ward", "diagnoses"}
    discharge.refresh_from_db()
    assert (discharge.ward, discharge.diagnoses) == ("", [])
