"""Twilio's REST client for an inbox: its account SID, the token its environment variable holds, and the HTTP
client for this installation (Twilio itself, or the in-platform simulator)."""

from __future__ import annotations

from twilio.rest import Client

from channels_adapters.base import AdapterError
from channels_adapters.twilio import transport
from channels_adapters.twilio.signing import auth_token_for
from contactcenter.models import Inbox


def client_for(inbox: Inbox) -> Client:
    account_sid = str(inbox.config.get("account_sid") or "")
    if not account_sid:
        raise AdapterError("the inbox has no Twilio account SID", permanent=True, code="no_account_sid")
    return Client(account_sid, auth_token_for(inbox), http_client=transport.http_client())


def is_simulated(client: Client) -> bool:
    """The simulator stands in for the patient's phone by writing to our own database: no delivery threads."""
    return isinstance(client.http_client, transport.SimulatedTwilioHttpClient)
