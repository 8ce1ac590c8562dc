from __future__ import annotations

from django.apps import AppConfig


class CallbacksConfig(AppConfig):
    name = "callbacks"

    def ready(self) -> None:
        from callbacks.actions.recovery import escalate_overdue_cases
        from callbacks.dispatcher import dispatch_due_tasks
        from callbacks.surveys.flow import (
            awaits_reply,
            claims_reply,
            handle_reply,
            patients_taking_surveys,
            run_due_sessions,
        )
        from contactcenter.dispatch import register_due_work
        from contactcenter.inbound_hooks import register_inbound_hook, register_reply_claim

        # Time lives in the database: the one periodic job picks up whatever of ours is due.
        # The 09:00 burst after a weekend is thousands of rows; the dispatcher still commits in batches of 200.
        register_due_work("followup_tasks", lambda: dispatch_due_tasks(limit=20_000))
        register_due_work("survey_sessions", lambda: run_due_sessions())
        register_due_work("service_cases", lambda: escalate_overdue_cases())
        # An inbound SMS from a patient taking a survey answers it (and stays in the inbox too).
        register_inbound_hook(
            "followup_surveys", handle_reply, interested=awaits_reply, interested_in_batch=patients_taking_surveys
        )
        # Asked first, when the reply reads as a keyword: "N" to a yes/no question is an answer, not an opt-out.
        register_reply_claim("followup_surveys", claims_reply)
