from __future__ import annotations

from django.apps import AppConfig


class ChannelAdaptersConfig(AppConfig):
    name = "channels_adapters"
    verbose_name = "Channel adapters"
