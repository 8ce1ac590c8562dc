from __future__ import annotations

from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        # Replies: a patient's answer to a campaign is linked to it in the inbox; STOP skips waiting sends.
        from campaigns.replies import handle_inbound as link_campaign_reply
        from campaigns.replies import may_answer_a_campaign, patients_campaigns_reached
        from contactcenter.inbound_hooks import register_inbound_hook

        register_inbound_hook(
            "campaign_replies",
            link_campaign_reply,
            interested=may_answer_a_campaign,
            interested_in_batch=patients_campaigns_reached,
        )

        # Lifecycle stages: recomputed for a patient when a visit is recorded, and for everyone nightly.
        from campaigns.actions.lifecycle import run_nightly_recompute, schedule_recompute
        from contactcenter.dispatch import register_due_work
        from contactcenter.visit_hooks import register_visit_hook

        register_visit_hook("campaign_lifecycles", schedule_recompute)
        register_due_work("campaign_lifecycles_nightly", lambda: run_nightly_recompute())

        # Sending: running campaigns whose next action has come (deferred recipients due, or a run whose
        # worker died) get a new run; recipients follow their message's delivery status.
        from campaigns.sending.delivery_states import FOLLOWED_STATUSES, follow_message_status
        from campaigns.sending.engine import dispatch_due_campaigns
        from contactcenter.models import SenderKind
        from contactcenter.status_hooks import register_status_hook

        register_due_work("campaign_sending", lambda: dispatch_due_campaigns())
        register_status_hook(
            "campaign_recipients",
            follow_message_status,
            sender_kinds=frozenset({SenderKind.CAMPAIGN}),
            statuses=FOLLOWED_STATUSES,
        )

        # Scheduling: scheduled campaigns whose time has come are launched (recipients snapshotted).
        from campaigns.actions.campaigns import launch_due_campaigns

        register_due_work("campaign_launches", lambda: launch_due_campaigns())
