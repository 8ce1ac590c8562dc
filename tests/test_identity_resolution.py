from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from contactcenter.identities import normalize_email, normalize_phone
from contactcenter.models import Patient, PatientIdentity


@pytest.mark.parametrize(
    "raw", ["+86 138 0013 8000", "13800138000", "0086-138-0013-8000", "+8613800138000", "(+86) 138-0013-8000"]
)
def test_chinese_mobile_spellings_normalize_to_one_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+8613800138000"


@pytest.mark.parametrize("raw", ["", "hello", "123", "+86 138 0013", "+1 555"])
def test_invalid_phone_numbers_get_a_clear_message(raw: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalize_phone(raw)
    assert "phone number" in err.value.messages[0]


def test_default_region_is_configurable(settings) -> None:
    settings.PHONE_DEFAULT_REGION = "US"
    assert normalize_phone("(415) 555-2671") == "+14155552671"


def test_email_domain_and_mailbox_are_lowercased() -> None:
    assert normalize_email(" Li.Wei@Example.COM ") == "li.wei@example.com"


def test_three_spellings_of_one_number_are_one_patient(world, inbound) -> None:
    spellings = ["+86 138 0013 8000", "13800138000", "0086-138-0013-8000"]
    results = [inbound(world.inbox_a, normalize_phone(s), f"message {i}") for i, s in enumerate(spellings)]
    assert len({r.patient.pk for r in results}) == 1
    assert len({r.conversation.pk for r in results}) == 1
    assert PatientIdentity.objects.filter(kind="phone").count() == 1


def test_two_patients_with_the_same_name_never_merge(world, inbound) -> None:
    first = inbound(world.inbox_a, "+8613800138000", "hi", name="王芳")
    second = inbound(world.inbox_a, "+8613900139000", "hi", name="王芳")
    assert first.patient.pk != second.patient.pk
    assert Patient.objects.filter(name="王芳").count() == 2
