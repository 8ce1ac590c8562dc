"""The SMS inbox and the recording Twilio client of the sending tests, for the other campaign tests too."""

from tests.campaigns.test_sending import sms_inbox, twilio_api

__all__ = ["sms_inbox", "twilio_api"]
