"""Twilio, shared by every channel that uses it (SMS now, voice next): request signing and the webhook URLs we
give out (signing.py), the REST client (client.py), what Twilio's errors mean (errors.py), and the HTTP client
the SDK talks through, real or the in-platform simulator (transport.py).

Not a Django app: the channels' own folders hold their views, models and adapters and import from here.
"""
