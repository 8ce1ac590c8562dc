from __future__ import annotations

from django.apps import AppConfig


class WebchatConfig(AppConfig):
    name = "channels_adapters.webchat"
    label = "webchat"
    verbose_name = "Web chat"

    def ready(self) -> None:
        from channels_adapters.base import register
        from channels_adapters.webchat.adapter import WebchatAdapter

        register(WebchatAdapter.channel_type, WebchatAdapter)

        # A reply sent on by SMS or email while no widget was open follows its copy's delivery status.
        from channels_adapters.webchat.actions import FOLLOWED_STATUSES, WEBCHAT_REPLY_FLAG, follow_offline_copy
        from contactcenter.models import SenderKind
        from contactcenter.status_hooks import register_status_hook

        register_status_hook(
            "webchat_offline_copies",
            follow_offline_copy,
            sender_kinds=frozenset({SenderKind.SYSTEM}),
            statuses=FOLLOWED_STATUSES,
            flag=WEBCHAT_REPLY_FLAG,
        )
