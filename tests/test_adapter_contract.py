"""Every channel has a registered adapter that keeps the contract (channels_adapters/base.py), and the optional
capabilities are what each channel can really do."""

from __future__ import annotations

import inspect

import pytest

from channels_adapters import base
from contactcenter.models import ChannelType

# Voice arrives with its own issue; every other channel type must be deliverable.
NOT_YET = {ChannelType.VOICE}


def test_every_channel_type_has_a_registered_adapter() -> None:
    missing = {c.value for c in ChannelType if c not in NOT_YET} - set(base.registered())
    assert missing == set()


@pytest.mark.parametrize("channel", sorted(base.registered()))
def test_each_adapter_keeps_the_contract(channel: str) -> None:
    adapter = base.adapter_for_channel(channel)
    assert adapter.channel_type == channel
    assert adapter.address_kind
    assert adapter.unconfirmed in (base.Unconfirmed.RESEND, base.Unconfirmed.FAIL)
    for method in ("send", "map_status"):
        assert callable(getattr(adapter, method)), method
    # A capability is offered with the protocol's own keyword arguments, not a look-alike.
    if isinstance(adapter, base.LooksUpSent):
        parameters = inspect.signature(adapter.find_sent).parameters
        assert {"since", "exclude"} <= set(parameters)


def test_capabilities_are_what_each_channel_can_do() -> None:
    capabilities = {channel: base.capabilities_of(channel) for channel in base.registered()}
    assert capabilities["sms"] >= {"VerifiesWebhooks", "ParsesInbound", "LooksUpSent", "PreparesBatches"}
    assert "ParsesInbound" in capabilities["simulator"]
    # Nothing can be asked of an SMTP server or the widget about a lost send.
    assert "LooksUpSent" not in capabilities["email"] | capabilities["webchat"]
    assert base.channels_with(base.LooksUpSent) == ["sms"]
