from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ContactCenterConfig(AppConfig):
    name = "contactcenter"
    verbose_name = _("Contact center")

    def ready(self) -> None:
        from contactcenter.actions.conversations import wake_snoozed_conversations
        from contactcenter.actions.delivery import poll_unsettled_statuses, reconcile_unconfirmed, redeliver_stalled
        from contactcenter.actions.housekeeping import prune_events
        from contactcenter.actions.inbound_queue import schedule_waiting_drains
        from contactcenter.dispatch import register_due_work

        # First in every run (this app is ready before the feature apps): inbound webhooks and messages a lost
        # task or a dead worker left behind are taken up again before new work is added.
        register_due_work("inbound_webhooks", lambda: schedule_waiting_drains())
        register_due_work("stalled_deliveries", lambda: redeliver_stalled())
        register_due_work("unconfirmed_sends", lambda: reconcile_unconfirmed().settled)
        register_due_work("unsettled_statuses", lambda: poll_unsettled_statuses())
        register_due_work("snoozed_conversations", lambda: wake_snoozed_conversations())
        register_due_work("event_pruning", lambda: prune_events())

        # Password changes, deactivations and sign-outs, however Django makes them, end sessions, tokens and sockets.
        from contactcenter.actions.staff import connect_receivers

        connect_receivers()
