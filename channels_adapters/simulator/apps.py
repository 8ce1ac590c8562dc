from __future__ import annotations

from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    name = "channels_adapters.simulator"
    label = "simulator"
    verbose_name = "Channel simulator"

    def ready(self) -> None:
        from channels_adapters.base import register
        from channels_adapters.simulator.adapter import SimulatorAdapter

        register(SimulatorAdapter.channel_type, SimulatorAdapter)
