"""Small helpers that read settings from the environment and fail loudly at start-up."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# DRF's rate syntax ("120/min"); DRF reads only the period's first letter, so anything else is a typo to refuse.
_RATE_PERIODS = {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}


def envrate(name: str, default: str) -> str:
    """A request rate such as ``120/min`` (per second, minute, hour or day)."""
    value = os.environ.get(name) or default
    count, _sep, period = value.strip().partition("/")
    if not (count.isdigit() and int(count) > 0 and period in _RATE_PERIODS):
        raise ImproperlyConfigured(f"{name} must be a rate such as 120/min (per s, min, hour or day), got {value!r}")
    return f"{int(count)}/{period}"


# Host names that only ever mean "this machine". "testserver" is the name Django's test client sends; no DNS
# resolves it, so it exposes nothing either.
_LOOPBACK_NAMES = {"localhost", "testserver"}


def is_loopback_host(host: str) -> bool:
    """True for a host name or address that can only be reached from the machine itself."""
    import ipaddress

    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def hosts_beyond_loopback(hosts: list[str]) -> list[str]:
    """The entries of ALLOWED_HOSTS that let other machines in ("*", "0.0.0.0", a real name or address)."""
    return [h for h in hosts if not is_loopback_host(h)]
