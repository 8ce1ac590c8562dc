"""HL7 v2 discharge intake: real messages over a real TCP socket with MLLP framing, and the parser's rules."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from django.utils import timezone

from callbacks.actions import hl7_intake
from callbacks.actions.hl7_intake import accept_hl7
from callbacks.intake import hl7 as parser
from callbacks.intake.mllp import END_BLOCK, START_BLOCK, Framer, ListenerThread, Oversized, frame
from callbacks.models import (
    CallbackTask,
    Discharge,
    DischargeStatus,
    Disposition,
    IntakeMessage,
    IntakeOutcome,
    TaskKind,
    TaskStatus,
)
from callbacks.phones import read_phone
from contactcenter.models import Gender, IdentityKind, Patient, PatientIdentity

FIXTURES = Path(__file__).resolve().parents[2] / "callbacks" / "intake" / "fixtures"
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ---------------------------------------------------------------------------------------------------
# A real listener and a real MLLP client
# ---------------------------------------------------------------------------------------------------


class MllpClient:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_ack(self) -> hl7.Message:
        while END_BLOCK not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the listener; got {self._buffer!r}")
            self._buffer += chunk
        block, self._buffer = self._buffer.split(END_BLOCK, 1)
        assert block.startswith(START_BLOCK), block
        return hl7.parse(block[1:].decode("utf-8"))

    def exchange(self, message: bytes) -> hl7.Message:
        self.send_raw(frame(message))
        return self.read_ack()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(transactional_db: Any) -> Iterator[tuple[str, int]]:
    # The listener's worker threads use their own database connections, so they only see committed rows.
    thread = ListenerThread(host="127.0.0.1", port=0, idle_timeout=30)
    address = thread.start()
    yield address
    thread.stop()


@pytest.fixture
def mllp(listener: tuple[str, int]) -> Iterator[MllpClient]:
    connection = MllpClient(listener)
    yield connection
    connection.close()


def msa(ack: hl7.Message, field: int) -> str:
    return str(ack.segment("MSA").extract_field(1, field))


def control_id(raw: bytes) -> str:
    return parser.read_header(parser.parse_message(raw)).control_id


# ---------------------------------------------------------------------------------------------------
# Over the socket
# ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_full_epic_a03_is_acknowledged_and_stored(mllp: MllpClient) -> None:
    raw = fixture("adt_a03_full.hl7")
    ack = mllp.exchange(raw)

    assert msa(ack, 1) == "AA"
    assert msa(ack, 2) == "MSG20250314103512001"
    msh = ack.segment("MSH")
    # Sender and receiver swapped: we answer as the application the HIS addressed.
    assert [str(msh.extract_field(1, n)) for n in (3, 4, 5, 6)] == [
        "CONTACT_CENTER",
        "GUANGHUA_HOSP",
        "EPIC",
        "GUANGHUA_HOSP",
    ]
    assert str(msh.extract_field(1, 9, 1, 1)) == "ACK"
    assert str(msh.extract_field(1, 9, 1, 2)) == "A03"

    discharge = Discharge.objects.select_related("patient", "department").get(visit_number="V20250301881")
    assert discharge.source == "hl7"
    assert discharge.ward == "CARD5A"
    # PV1-10 "CARD" is no department's code and nobody has mapped it: filed as unmapped, never a new department.
    assert (discharge.department.code, discharge.his_department_code) == ("his-unmapped", "CARD")
    assert discharge.attending_doctor == "MING ZHOU"
    assert discharge.disposition == Disposition.HOME
    assert discharge.disposition_code == "01"
    assert discharge.discharged_at == dt.datetime(2025, 3, 14, 2, 30, tzinfo=dt.UTC)
    assert discharge.diagnoses == [
        {"code": "I21.4", "text": "Non-ST elevation (NSTEMI) myocardial infarction", "system": "I10"},
        {"code": "E11.9", "text": "Type 2 diabetes mellitus without complications", "system": "I10"},
    ]
    assert discharge.visit.admitted_at == dt.datetime(2025, 3, 8, 13, 45, tzinfo=dt.UTC)
    patient = discharge.patient
    assert patient.name == "MEI L CHEN"
    assert patient.birth_date == dt.date(1960, 3, 7)
    assert patient.gender == Gender.FEMALE
    identities = set(patient.identities.values_list("kind", "value"))
    # PID-3's MRN-typed repetition, not the first (an enterprise id) nor the national id.
    assert identities == {(IdentityKind.MRN, "MRN7654321"), (IdentityKind.PHONE, "+8613800138000")}

    trail = IntakeMessage.objects.get()
    assert (trail.source, trail.control_id, trail.message_type, trail.visit_number, trail.outcome) == (
        "hl7",
        "MSG20250314103512001",
        "ADT^A03",
        "V20250301881",
        IntakeOutcome.ACCEPTED,
    )
    assert trail.discharge_id == discharge.pk
    assert trail.raw.startswith("MSH|^~\\&|EPIC|") and "DG1|2|I10|E11.9" in trail.raw


@pytest.mark.django_db(transaction=True)
def test_minimal_a03_without_offset_is_in_the_hospitals_time_zone(mllp: MllpClient) -> None:
    ack = mllp.exchange(fixture("adt_a03_minimal.hl7"))

    assert (msa(ack, 1), msa(ack, 2)) == ("AA", "MSG20250315120000002")
    discharge = Discharge.objects.get(visit_number="V20250310002")
    assert discharge.discharged_at == dt.datetime(2025, 3, 15, 11, 30, tzinfo=SHANGHAI)
    assert discharge.disposition == Disposition.HOME
    assert discharge.disposition_code == ""
    assert discharge.diagnoses == []
    assert discharge.patient.name == "HAO LIN"
    assert set(discharge.patient.identities.values_list("value", flat=True)) == {"MRN2000001", "+8613912345678"}


@pytest.mark.django_db(transaction=True)
def test_resent_control_id_is_acknowledged_again_and_not_reapplied(mllp: MllpClient) -> None:
    raw = fixture("adt_a03_full.hl7")
    assert msa(mllp.exchange(raw), 1) == "AA"
    # A nurse's correction made after the first delivery must survive the interface engine's resend.
    Discharge.objects.filter(visit_number="V20250301881").update(ward="CARD5B")

    again = mllp.exchange(raw)

    assert (msa(again, 1), msa(again, 2)) == ("AA", "MSG20250314103512001")
    assert Discharge.objects.get().ward == "CARD5B"
    assert IntakeMessage.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_messages_in_one_write_get_two_acks_in_order(mllp: MllpClient) -> None:
    mllp.send_raw(frame(fixture("adt_a03_full.hl7")) + frame(fixture("adt_a03_minimal.hl7")))

    first, second = mllp.read_ack(), mllp.read_ack()

    assert (msa(first, 1), msa(first, 2)) == ("AA", "MSG20250314103512001")
    assert (msa(second, 1), msa(second, 2)) == ("AA", "MSG20250315120000002")
    assert set(Discharge.objects.values_list("visit_number", flat=True)) == {"V20250301881", "V20250310002"}


@pytest.mark.django_db(transaction=True)
def test_frame_split_over_many_tcp_writes_is_reassembled(mllp: MllpClient) -> None:
    data = frame(fixture("adt_a03_chinese_name.hl7"))
    # Small writes with TCP_NODELAY: the listener sees the frame in many reads, cut inside UTF-8 characters.
    for start in range(0, len(data), 7):
        mllp.send_raw(data[start : start + 7])
        time.sleep(0.002)

    ack = mllp.read_ack()

    assert (msa(ack, 1), msa(ack, 2)) == ("AA", "MSG20250317080000010")
    assert Discharge.objects.get().patient.name == "张伟"


@pytest.mark.django_db(transaction=True)
def test_garbage_before_the_start_block_is_skipped(mllp: MllpClient) -> None:
    mllp.send_raw(b"GET / HTTP/1.0\r\n\r\n\x00\xff" + frame(fixture("adt_a03_minimal.hl7")))

    ack = mllp.read_ack()

    assert (msa(ack, 1), msa(ack, 2)) == ("AA", "MSG20250315120000002")
    assert Discharge.objects.filter(visit_number="V20250310002").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "visit_number", "disposition"),
    [
        ("adt_a03_lf.hl7", "V20250313004", Disposition.HOME_CARE),
        ("adt_a03_crlf.hl7", "V20250314005", Disposition.EXPIRED),
    ],
)
def test_lf_and_crlf_segment_separators_are_accepted(
    mllp: MllpClient, name: str, visit_number: str, disposition: str
) -> None:
    raw = fixture(name)
    assert b"\n" in raw

    ack = mllp.exchange(raw)

    assert msa(ack, 1) == "AA"
    discharge = Discharge.objects.get(visit_number=visit_number)
    assert discharge.disposition == disposition
    # Every segment was found, not only the first line: PV1 gave the ward, PID the birth date.
    assert discharge.ward in ("OBS2A", "ICU")
    assert discharge.patient.birth_date is not None


@pytest.mark.django_db(transaction=True)
def test_crlf_offset_west_of_utc_is_honoured(mllp: MllpClient) -> None:
    assert msa(mllp.exchange(fixture("adt_a03_crlf.hl7")), 1) == "AA"
    # 14:20 at -05:00 is 19:20 UTC.
    assert Discharge.objects.get().discharged_at == dt.datetime(2025, 3, 16, 19, 20, tzinfo=dt.UTC)


@pytest.mark.django_db(transaction=True)
def test_chinese_names_in_utf8_are_stored_as_written(mllp: MllpClient) -> None:
    ack = mllp.exchange(fixture("adt_a03_chinese_name.hl7"))

    assert msa(ack, 1) == "AA"
    discharge = Discharge.objects.select_related("patient").get(visit_number="V20250315006")
    assert discharge.patient.name == "张伟"
    assert discharge.attending_doctor == "王芳"
    assert discharge.diagnoses == [{"code": "I63.9", "text": "脑梗死", "system": "I10"}]
    assert discharge.discharged_at == dt.datetime(2025, 3, 16, 23, 30, 15, 250000, tzinfo=dt.UTC)
    assert "张^伟" in IntakeMessage.objects.get().raw


@pytest.mark.django_db(transaction=True)
def test_gb18030_message_from_a_legacy_his_is_decoded(mllp: MllpClient) -> None:
    raw = fixture("adt_a03_gb18030.hl7")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")

    ack = mllp.exchange(raw)

    assert msa(ack, 1) == "AA"
    discharge = Discharge.objects.select_related("patient").get(visit_number="V20250316007")
    assert (discharge.patient.name, discharge.attending_doctor) == ("李娜", "刘洋")
    assert discharge.disposition == Disposition.AGAINST_ADVICE


@pytest.mark.django_db(transaction=True)
def test_wrong_message_type_is_rejected_and_nothing_is_applied(mllp: MllpClient) -> None:
    ack = mllp.exchange(fixture("oru_r01.hl7"))

    assert (msa(ack, 1), msa(ack, 2)) == ("AR", "MSG20250316120000006")
    assert "unsupported message type ORU^R01" in msa(ack, 3)
    assert str(ack.segment("ERR").extract_field(1, 3, 1, 1)) == "200"
    assert not Patient.objects.exists()
    trail = IntakeMessage.objects.get()
    assert (trail.outcome, trail.message_type) == (IntakeOutcome.REJECTED, "ORU^R01")


@pytest.mark.django_db(transaction=True)
def test_a03_without_discharge_time_is_an_error_and_stores_nothing(mllp: MllpClient) -> None:
    ack = mllp.exchange(fixture("adt_a03_missing_pv1_45.hl7"))

    assert (msa(ack, 1), msa(ack, 2)) == ("AE", "MSG20250316130000007")
    assert "PV1-45" in msa(ack, 3)
    err = ack.segment("ERR")
    assert [str(err.extract_field(1, 2, 1, n)) for n in (1, 2, 3)] == ["PV1", "1", "45"]
    assert str(err.extract_field(1, 3, 1, 1)) == "101"
    assert not Discharge.objects.exists()
    assert not Patient.objects.exists()
    assert not PatientIdentity.objects.exists()
    trail = IntakeMessage.objects.get()
    assert trail.outcome == IntakeOutcome.ERROR
    assert "PV1-45" in trail.error
    assert trail.visit_number == "V20250312003"


@pytest.mark.django_db(transaction=True)
def test_field_errors_from_record_discharge_become_the_ae_reason(mllp: MllpClient) -> None:
    raw = fixture("adt_a03_minimal.hl7").replace(b"|MRN2000001|", b"|MRN 2000001|")

    ack = mllp.exchange(raw)

    assert msa(ack, 1) == "AE"
    assert msa(ack, 3).startswith("PID-3 mrn:")
    assert not Discharge.objects.exists()
    assert not Patient.objects.exists()
    assert IntakeMessage.objects.get().outcome == IntakeOutcome.ERROR


@pytest.mark.django_db(transaction=True)
def test_a_message_fixed_after_an_error_is_applied_under_the_same_control_id(mllp: MllpClient) -> None:
    bad = fixture("adt_a03_minimal.hl7").replace(b"|MRN2000001|", b"|MRN 2000001|")
    assert msa(mllp.exchange(bad), 1) == "AE"

    assert msa(mllp.exchange(fixture("adt_a03_minimal.hl7")), 1) == "AA"

    assert Discharge.objects.filter(visit_number="V20250310002").exists()
    assert list(IntakeMessage.objects.order_by("received_at").values_list("outcome", flat=True)) == ["AE", "AA"]


@pytest.mark.django_db(transaction=True)
def test_a08_updates_the_patients_demographics(mllp: MllpClient) -> None:
    assert msa(mllp.exchange(fixture("adt_a03_full.hl7")), 1) == "AA"

    ack = mllp.exchange(fixture("adt_a08.hl7"))

    assert (msa(ack, 1), msa(ack, 2)) == ("AA", "MSG20250316090000003")
    patient = Patient.objects.get()
    assert patient.name == "MEILING CHEN"
    assert patient.birth_date == dt.date(1960, 3, 8)
    phones = set(patient.identities.filter(kind=IdentityKind.PHONE).values_list("value", flat=True))
    assert phones == {"+8613800138000", "+8613700137000"}
    assert IntakeMessage.objects.filter(message_type="ADT^A08", outcome=IntakeOutcome.ACCEPTED).exists()


@pytest.mark.django_db(transaction=True)
def test_a08_for_an_unknown_patient_is_accepted_and_creates_nobody(mllp: MllpClient) -> None:
    ack = mllp.exchange(fixture("adt_a08.hl7"))

    assert msa(ack, 1) == "AA"
    assert not Patient.objects.exists()
    assert "unknown MRN" in IntakeMessage.objects.get().error


def _open_call_for(discharge: Discharge) -> CallbackTask:
    now = timezone.now()
    return CallbackTask.objects.create(
        discharge=discharge,
        patient=discharge.patient,
        department=discharge.department,
        kind=TaskKind.CALL,
        status=TaskStatus.OPEN,
        due_at=now,
        deadline_at=now + dt.timedelta(days=2),
        next_action_at=now,
    )


@pytest.mark.django_db(transaction=True)
def test_a13_cancels_the_discharge_and_its_pending_follow_ups(mllp: MllpClient) -> None:
    assert msa(mllp.exchange(fixture("adt_a03_full.hl7")), 1) == "AA"
    discharge = Discharge.objects.get()
    task = _open_call_for(discharge)

    ack = mllp.exchange(fixture("adt_a13.hl7"))

    assert (msa(ack, 1), msa(ack, 2)) == ("AA", "MSG20250316110000005")
    discharge.refresh_from_db()
    task.refresh_from_db()
    assert discharge.status == DischargeStatus.CANCELLED
    assert "A13" in discharge.cancel_reason
    assert task.status == TaskStatus.CANCELLED
    assert not CallbackTask.objects.filter(discharge=discharge).exclude(status=TaskStatus.CANCELLED).exists()
    trail = IntakeMessage.objects.get(message_type="ADT^A13")
    assert (trail.visit_number, trail.discharge_id) == ("V20250301881", discharge.pk)


@pytest.mark.django_db(transaction=True)
def test_a11_cancels_the_admission_and_its_follow_ups(mllp: MllpClient) -> None:
    assert msa(mllp.exchange(fixture("adt_a03_minimal.hl7")), 1) == "AA"
    task = _open_call_for(Discharge.objects.get())

    ack = mllp.exchange(fixture("adt_a11.hl7"))

    assert msa(ack, 1) == "AA"
    assert Discharge.objects.get().status == DischargeStatus.CANCELLED
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_not_hl7_at_all_is_an_error_and_the_connection_stays_usable(mllp: MllpClient) -> None:
    ack = mllp.exchange(b"hello, is this the lab?")

    assert msa(ack, 1) == "AE"
    assert msa(ack, 2) == ""
    assert "MSH" in msa(ack, 3)
    assert msa(mllp.exchange(fixture("adt_a03_minimal.hl7")), 1) == "AA"
    assert list(IntakeMessage.objects.order_by("received_at").values_list("outcome", flat=True)) == ["AE", "AA"]


@pytest.mark.django_db(transaction=True)
def test_oversized_frame_is_refused_and_the_next_message_accepted(mllp: MllpClient) -> None:
    header = fixture("adt_a03_minimal.hl7").split(b"\r", 1)[0]
    huge = header + b"\rNTE|1||" + b"x" * (1024 * 1024 + 10)

    mllp.send_raw(frame(huge))
    refused = mllp.read_ack()

    assert (msa(refused, 1), msa(refused, 2)) == ("AE", "MSG20250315120000002")
    assert "limit" in msa(refused, 3)
    assert not IntakeMessage.objects.exists()
    assert msa(mllp.exchange(fixture("adt_a03_minimal.hl7")), 1) == "AA"


@pytest.mark.django_db(transaction=True)
def test_unexpected_failure_is_an_internal_error_and_stores_nothing(
    mllp: MllpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(hl7_intake, "record_discharge", broken)

    ack = mllp.exchange(fixture("adt_a03_full.hl7"))

    assert (msa(ack, 1), msa(ack, 2), msa(ack, 3)) == ("AE", "MSG20250314103512001", "internal error")
    assert not IntakeMessage.objects.exists()
    assert not Discharge.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_idle_connection_is_closed_by_the_listener() -> None:
    thread = ListenerThread(host="127.0.0.1", port=0, idle_timeout=0.2)
    address = thread.start()
    try:
        with socket.create_connection(address, timeout=20) as sock:
            sock.sendall(START_BLOCK + b"MSH|^~\\&|half a message")
            assert sock.recv(100) == b""
    finally:
        thread.stop()


@pytest.mark.django_db(transaction=True)
def test_port_in_use_raises_for_the_caller_to_report(listener: tuple[str, int]) -> None:
    with pytest.raises(OSError):
        ListenerThread(host="127.0.0.1", port=listener[1]).start()


@pytest.mark.django_db(transaction=True)
def test_concurrent_resends_of_one_message_apply_it_once() -> None:
    raw = fixture("adt_a03_full.hl7")
    acks: list[bytes] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        from django.db import connection

        barrier.wait()
        try:
            acks.append(accept_hl7(raw))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [msa(hl7.parse(a.decode()), 1) for a in acks] == ["AA"] * 4
    assert IntakeMessage.objects.count() == 1
    assert Discharge.objects.count() == 1


# ---------------------------------------------------------------------------------------------------
# The parser, without a socket
# ---------------------------------------------------------------------------------------------------


def _a03(**fields: str) -> bytes:
    """The minimal A03 with PID/PV1 fields replaced: keys like PID_13 or PV1_45."""
    message = parser.parse_message(fixture("adt_a03_minimal.hl7"))
    for key, value in fields.items():
        segment, number = key.split("_")
        message.segment(segment).assign_field(value, int(number))
    return str(message).encode()


def _interpret(raw: bytes) -> parser.Intake:
    return parser.interpret(parser.parse_message(raw))


@pytest.mark.parametrize(
    ("family", "given", "middle", "expected"),
    [
        ("张", "伟", "", "张伟"),
        ("欧阳", "娜娜", "", "欧阳娜娜"),
        ("Smith", "John", "", "John Smith"),
        ("Smith", "John", "Q", "John Q Smith"),
        ("Smith", "", "", "Smith"),
        ("", "", "", ""),
    ],
)
def test_person_name_follows_the_names_own_convention(family: str, given: str, middle: str, expected: str) -> None:
    assert parser.person_name(family, given, middle) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("01", Disposition.HOME),
        ("1", Disposition.HOME),
        ("", Disposition.HOME),
        ("02", Disposition.TRANSFERRED),
        ("05", Disposition.TRANSFERRED),
        ("06", Disposition.HOME_CARE),
        ("07", Disposition.AGAINST_ADVICE),
        ("20", Disposition.EXPIRED),
        ("42", Disposition.EXPIRED),
        ("09", Disposition.OTHER),
        ("HOME", Disposition.OTHER),
    ],
)
def test_table_0112_dispositions(code: str, expected: str) -> None:
    assert parser.disposition_for(code) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("202503141030", dt.datetime(2025, 3, 14, 10, 30, tzinfo=SHANGHAI)),
        ("20250314", dt.datetime(2025, 3, 14, tzinfo=SHANGHAI)),
        ("20250314103005", dt.datetime(2025, 3, 14, 10, 30, 5, tzinfo=SHANGHAI)),
        ("20250314103005.1234", dt.datetime(2025, 3, 14, 10, 30, 5, 123400, tzinfo=SHANGHAI)),
        ("20250314103000+0000", dt.datetime(2025, 3, 14, 10, 30, tzinfo=dt.UTC)),
        ("20250314103000+0545", dt.datetime(2025, 3, 14, 4, 45, tzinfo=dt.UTC)),
        ("20250314103000-0030", dt.datetime(2025, 3, 14, 11, 0, tzinfo=dt.UTC)),
        ("20250314103000.5-0500", dt.datetime(2025, 3, 14, 15, 30, 0, 500000, tzinfo=dt.UTC)),
    ],
)
def test_hl7_timestamps(value: str, expected: dt.datetime) -> None:
    parsed = parser.parse_timestamp(value, "PV1-45")
    assert timezone.is_aware(parsed)
    assert parsed == expected


@pytest.mark.parametrize("value", ["2025", "2025031", "20251314", "20250314T1030", "20250314103000+2500", "yesterday"])
def test_bad_timestamps_name_the_field(value: str) -> None:
    with pytest.raises(parser.HL7Rejection) as caught:
        parser.parse_timestamp(value, "PV1-45")
    assert caught.value.code == "AE"
    assert caught.value.location == "PV1-45"


def test_separators_are_normalized_to_carriage_returns() -> None:
    assert parser.normalize_segments("MSH|a\r\nPID|b\nPV1|c\r\r\nDG1|d\n") == "MSH|a\rPID|b\rPV1|c\rDG1|d"


def test_gb18030_is_the_fallback_and_utf8_wins_when_valid() -> None:
    assert parser.decode("张伟".encode()) == "张伟"
    assert parser.decode("张伟".encode("gb18030")) == "张伟"


@pytest.mark.parametrize(
    ("pid_3", "expected"),
    [
        ("E1234^^^EPI^EPI~MRN77^^^HOSP^MR", "MRN77"),
        ("E1234^^^EPI^EPI~MRN77^^^HOSP^MRN", "MRN77"),
        ("MRN55^^^HOSP", "MRN55"),
        ("MRN66", "MRN66"),
        ("^^^HOSP^MR~MRN88", "MRN88"),
    ],
)
def test_mrn_is_the_mr_typed_identifier_else_the_first(pid_3: str, expected: str) -> None:
    intake = _interpret(_a03(PID_3=pid_3))
    assert isinstance(intake, parser.DischargeIntake)
    assert intake.record.demographics.mrn == expected


@pytest.mark.parametrize(
    ("pid_13", "pid_11", "expected"),
    [
        ("13912345678", "", "+8613912345678"),
        ("13912345678^PRN^CP~010-65158888^WPN^PH", "", "+8613912345678"),
        ("010-65158888^WPN^PH~13912345678^PRN^CP", "", "+8613912345678"),
        ("^PRN^CP" + "^" * 9 + "+8613800138000", "", "+8613800138000"),
        ("^PRN^CP^^86^139^12345678", "", "+8613912345678"),
        # No country code: the address's country (PID-11.6) says how to read it, however it is spelled.
        ("^PRN^PH^^^610^5532781", "1 MAIN ST^^MEDIA^PA^19063^USA^H", "+16105532781"),
        ("^PRN^PH^^^610^5532781", "1 MAIN ST^^MEDIA^PA^19063^US", "+16105532781"),
        ("^PRN^PH^^^610^5532781^12", "^^^^^United States", "+16105532781"),
        ("(610) 553-2781", "^^^^^USA", "+16105532781"),
        ("^NET^Internet^a@b.cn~^PRN^CP^^^^^^^^^+8613800138000", "", "+8613800138000"),
        ("", "", None),
    ],
)
def test_phone_from_xtn(pid_13: str, pid_11: str, expected: str | None) -> None:
    intake = _interpret(_a03(PID_13=pid_13, PID_11=pid_11))
    assert isinstance(intake, parser.DischargeIntake)
    demographics = intake.record.demographics
    assert read_phone(demographics.phone, demographics.phone_region) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [("M", Gender.MALE), ("F", Gender.FEMALE), ("O", Gender.OTHER), ("U", Gender.UNKNOWN), ("", "")],
)
def test_sex_codes(code: str, expected: str) -> None:
    intake = _interpret(_a03(PID_8=code))
    assert isinstance(intake, parser.DischargeIntake)
    assert intake.record.demographics.gender == expected


@pytest.mark.parametrize(
    ("fields", "location"),
    [({"PID_3": ""}, "PID-3"), ({"PV1_19": ""}, "PV1-19"), ({"PV1_45": ""}, "PV1-45"), ({"PV1_10": ""}, "PV1-10")],
)
def test_missing_required_fields_are_errors_naming_the_field(fields: dict[str, str], location: str) -> None:
    with pytest.raises(parser.HL7Rejection) as caught:
        _interpret(_a03(**fields))
    assert (caught.value.code, caught.value.location) == ("AE", location)
    assert location in caught.value.reason


def test_bad_birth_date_is_an_error() -> None:
    with pytest.raises(parser.HL7Rejection) as caught:
        _interpret(_a03(PID_7="19781322"))
    assert caught.value.location == "PID-7"


def test_birth_date_with_time_keeps_the_date() -> None:
    intake = _interpret(_a03(PID_7="197811220830"))
    assert isinstance(intake, parser.DischargeIntake)
    assert intake.record.demographics.birth_date == dt.date(1978, 11, 22)


@pytest.mark.parametrize("message_type", ["ADT^A01", "ADT^A04", "ORU^R01", "SIU^S12", ""])
def test_other_message_types_are_rejected(message_type: str) -> None:
    raw = fixture("adt_a03_minimal.hl7").replace(b"ADT^A03", message_type.encode())
    with pytest.raises(parser.HL7Rejection) as caught:
        _interpret(raw)
    assert caught.value.code == "AR"
    assert "unsupported message type" in caught.value.reason


def test_trigger_event_from_evn_when_msh_9_has_none() -> None:
    raw = fixture("adt_a03_minimal.hl7").replace(b"ADT^A03", b"ADT").replace(b"\rPID", b"\rEVN|A03|20250315\rPID")
    intake = _interpret(raw)
    assert isinstance(intake, parser.DischargeIntake)
    assert intake.header.message_type == "ADT^A03"


def test_pv2_is_ignored_and_dg1_gives_the_diagnoses() -> None:
    intake = _interpret(fixture("adt_a03_full.hl7"))
    assert isinstance(intake, parser.DischargeIntake)
    assert [d["code"] for d in intake.record.diagnoses] == ["I21.4", "E11.9"]
    assert intake.record.ward == "CARD5A"
    assert intake.record.department_code == "CARD"


def test_a13_and_a11_need_the_visit_number() -> None:
    raw = fixture("adt_a13.hl7").replace(b"V20250301881^^^GUANGHUA_HOSP^VN", b"")
    with pytest.raises(parser.HL7Rejection) as caught:
        _interpret(raw)
    assert caught.value.location == "PV1-19"


def test_ack_swaps_sender_and_receiver_and_keeps_the_reason_inside_its_field() -> None:
    header = parser.read_header(parser.parse_message(fixture("adt_a03_full.hl7")))
    ack = hl7.parse(parser.build_ack(header, "AE", "PID-13 phone: “12|3^4” is not valid"))

    msh = ack.segment("MSH")
    assert str(msh.extract_field(1, 3)) == "CONTACT_CENTER"
    assert str(msh.extract_field(1, 5)) == "EPIC"
    assert str(msh.extract_field(1, 7)).endswith("+0800")
    assert msa(ack, 1) == "AE"
    assert msa(ack, 2) == "MSG20250314103512001"
    assert msa(ack, 3) == "PID-13 phone: “12|3^4” is not valid"
    assert len(ack.segment("MSA")) == 4


def test_ack_for_unparseable_input_still_parses() -> None:
    ack = hl7.parse(parser.build_ack(parser.salvage_header(b"\x00garbage"), "AE", "not HL7"))
    assert (msa(ack, 1), msa(ack, 2)) == ("AE", "")


# ---------------------------------------------------------------------------------------------------
# MLLP framing, without a socket
# ---------------------------------------------------------------------------------------------------


def test_framer_reassembles_a_frame_split_between_end_bytes() -> None:
    framer = Framer()
    assert framer.feed(b"\x0bMSH|1\x1c") == []
    assert framer.feed(b"\x0d\x0bMSH|2") == [b"MSH|1"]
    assert framer.feed(b"\x1c\x0d") == [b"MSH|2"]


def test_framer_skips_garbage_and_abandoned_frames() -> None:
    framer = Framer()
    frames = framer.feed(b"noise\x0bMSH|half\x0bMSH|whole\x1c\x0dtrailing")
    assert frames == [b"MSH|whole"]
    assert framer.skipped == len(b"noise") + len(b"MSH|half") + len(b"trailing")


def test_framer_drops_an_oversized_frame_without_buffering_it() -> None:
    framer = Framer(max_bytes=100)
    assert framer.feed(b"\x0bMSH|" + b"x" * 60) == []
    assert framer.feed(b"x" * 60) == []
    assert framer.pending <= 101
    result = framer.feed(b"x" * 10 + b"\x1c\x0d\x0bMSH|ok\x1c\x0d")
    assert isinstance(result[0], Oversized)
    assert result[0].size == 4 + 130
    assert result[0].head.startswith(b"MSH|")
    assert result[1] == b"MSH|ok"


def test_framer_accepts_a_frame_exactly_at_the_limit() -> None:
    framer = Framer(max_bytes=10)
    assert framer.feed(b"\x0b" + b"y" * 10 + b"\x1c\x0d") == [b"y" * 10]


# ---------------------------------------------------------------------------------------------------
# The ACK speaks the sender's character set and names the sender exactly (accept_hl7's bytes)
# ---------------------------------------------------------------------------------------------------


def _with_charset(raw: bytes, charset: bytes) -> bytes:
    """The message with MSH-18 set (MSH padded to 18 fields when it is shorter)."""
    msh, rest = raw.split(b"\r", 1)
    fields = msh.split(b"|")
    fields += [b""] * (18 - len(fields))
    fields[17] = charset
    return b"|".join(fields[:18] + fields[18:]) + b"\r" + rest


@pytest.mark.django_db(transaction=True)
def test_ack_echoes_the_senders_full_hd_and_is_ascii_as_declared(mllp: MllpClient) -> None:
    mllp.send_raw(frame(fixture("adt_a03_us_patient.hl7")))
    raw_ack = mllp.sock.recv(65536)
    assert raw_ack.isascii()
    ack = hl7.parse(raw_ack[1:-2].decode("ascii"))
    msh = ack.segment("MSH")
    # MSH-3/4 of the message, every HD component, become MSH-5/6 of the ACK.
    assert str(msh(5)) == "EPIC^1.2.840.114350.1.13.99^ISO"
    assert str(msh(6)) == "MERCY_HOSP^2.16.840.1.113883.3.72^ISO"
    assert (str(msh(3)), str(msh(4))) == ("CONTACT_CENTER", "MERCY_HOSP")
    assert str(msh(18)) == "ASCII"
    assert msa(ack, 1) == "AA"


@pytest.mark.django_db
def test_an_ascii_ack_has_no_curly_quotes() -> None:
    raw = fixture("adt_a03_us_patient.hl7").replace(b"|MRN8000008^", b"|MRN 8000008^")
    raw_ack = accept_hl7(raw)
    assert raw_ack.isascii()
    reason = msa(hl7.parse(raw_ack.decode("ascii")), 3)
    assert reason.startswith('PID-3 mrn: "MRN 8000008"')


@pytest.mark.django_db
def test_a_utf8_ack_keeps_the_reason_as_written() -> None:
    raw = fixture("adt_a03_full.hl7").replace(b"E1234567^^^EPI^EPI~MRN7654321", b"E1234567^^^EPI^EPI~MRN 7654321")
    reason = msa(hl7.parse(accept_hl7(raw).decode("utf-8")), 3)
    assert reason.startswith("PID-3 mrn: \u201cMRN 7654321\u201d")


@pytest.mark.django_db
def test_a_gb18030_message_gets_a_gb18030_ack() -> None:
    raw = _with_charset(fixture("adt_a03_gb18030.hl7"), b"GB 18030-2000").replace(b"|MRN7000007|", b"|MRN 7000007|")
    raw_ack = accept_hl7(raw)
    with pytest.raises(UnicodeDecodeError):
        raw_ack.decode("utf-8")
    ack = hl7.parse(raw_ack.decode("gb18030"))
    assert str(ack.segment("MSH")(18)) == "GB 18030-2000"
    assert msa(ack, 3).startswith("PID-3 mrn: \u201cMRN 7000007\u201d")


@pytest.mark.django_db
def test_a_message_declaring_no_charset_gets_an_ascii_ack() -> None:
    # The legacy GB18030 fixture says nothing in MSH-18: HL7's default, ASCII, is readable whatever it reads.
    raw = fixture("adt_a03_gb18030.hl7").replace(b"|MRN7000007|", b"|MRN 7000007|")
    raw_ack = accept_hl7(raw)
    assert raw_ack.isascii()
    ack = hl7.parse(raw_ack.decode("ascii"))
    assert msa(ack, 1) == "AE"
    msh_fields = raw_ack.split(b"\r")[0].split(b"|")
    assert len(msh_fields) < 18 or msh_fields[17] == b""  # no MSH-18: ASCII, HL7's default


@pytest.mark.django_db
def test_the_declared_charset_is_the_one_the_message_is_read_in() -> None:
    # ISO 8859-1 "JOSÉ" is not UTF-8; before, the GB18030 fallback read it as mojibake.
    raw = _with_charset(fixture("adt_a03_minimal.hl7"), b"8859/1").replace(b"LIN^HAO", "LIN^JOSÉ".encode("latin-1"))
    raw_ack = accept_hl7(raw)
    assert msa(hl7.parse(raw_ack.decode("latin-1")), 1) == "AA"
    assert Patient.objects.get().name == "JOSÉ LIN"


def test_encode_ack_falls_back_character_by_character() -> None:
    assert parser.encode_ack("“PID-3” 张伟 — ok", "ASCII") == b'"PID-3" ?? - ok'
    assert parser.encode_ack("“PID-3” 张伟", "8859/1") == b'"PID-3" ??'
    assert parser.encode_ack("“PID-3” 张伟", "UNICODE UTF-8") == "“PID-3” 张伟".encode()
    assert parser.encode_ack("张伟", "") == b"??"


# ---------------------------------------------------------------------------------------------------
# A resend updates what it carries
# ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_a03_resend_without_dg1_keeps_the_diagnoses_and_a_null_clears_the_ward() -> None:
    assert b"MSA|AA" in accept_hl7(fixture("adt_a03_full.hl7"))
    full = parser.parse_message(fixture("adt_a03_full.hl7"))
    resend = str(full).split("\r")
    resend = [s for s in resend if not s.startswith("DG1")]
    resend[0] = resend[0].replace("MSG20250314103512001", "MSG20250314103512099")
    text = "\r".join(resend)
    # PV1-3 sent as the HL7 null: the ward is cleared; PV1-7 (attending) left empty: kept.
    text = text.replace("|CARD5A^512^02^GUANGHUA_HOSP^^^MAIN^5|", '|""|').replace(
        "|004777^ZHOU^MING^^^DR^^^NPI^L^^^DN|", "||"
    )

    assert b"MSA|AA" in accept_hl7(text.encode())

    discharge = Discharge.objects.get()
    assert discharge.diagnosis_codes == ["I21.4", "E11.9"]
    assert discharge.ward == ""
    assert discharge.attending_doctor == "MING ZHOU"
