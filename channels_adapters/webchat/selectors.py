"""Reads for the widget: what a visitor may see (their own messages, never notes or staff details)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from django.utils import timezone

from channels_adapters.webchat.models import WebUpload, WebVisitor
from contactcenter.access import StaffUser, can_view_conversation
from contactcenter.actions.patients import live_patient
from contactcenter.boundary import lookup_key
from contactcenter.models import (
    AgentProfile,
    Availability,
    ChannelType,
    Conversation,
    Event,
    Inbox,
    Message,
    Patient,
    SenderKind,
)

HISTORY_LIMIT = 100
WIDGET_EVENT_TYPES = ("message", "conversation")


def visitor_by_id(*, inbox: Inbox, visitor_id: str) -> WebVisitor | None:
    return WebVisitor.objects.select_related("patient").filter(inbox=inbox, visitor_id=visitor_id).first()


def conversation_ids_of(visitor: WebVisitor) -> list[int]:
    """The visitor's patient's threads in this inbox (after a supervisor's merge, the survivor's)."""
    patient = live_patient(visitor.patient)
    return list(Conversation.objects.filter(inbox_id=visitor.inbox_id, patient=patient).values_list("id", flat=True))


def conversation_ids_of_visitors(visitors: list[WebVisitor]) -> dict[int, list[int]]:
    """conversation_ids_of for many visitors: visitor pk → their threads (in id order). Two queries: whether a
    supervisor merged any of their patients since the sockets read them, and the threads."""
    patient_ids = {visitor.patient_id for visitor in visitors}
    live = {pk: pk for pk in patient_ids}
    for pk in Patient.objects.filter(pk__in=patient_ids, merged_into__isnull=False).values_list("pk", flat=True):
        live[pk] = live_patient(Patient.objects.get(pk=pk)).pk
    placed = {visitor.pk: (visitor.inbox_id, live[visitor.patient_id]) for visitor in visitors}
    threads: dict[tuple[int, int], list[int]] = {}
    if placed:
        rows = (
            Conversation.objects.filter(
                inbox_id__in={inbox for inbox, _ in placed.values()},
                patient_id__in={patient for _, patient in placed.values()},
            )
            .order_by("id")
            .values_list("id", "inbox_id", "patient_id")
        )
        for conversation_id, inbox_id, patient_id in rows:
            threads.setdefault((inbox_id, patient_id), []).append(conversation_id)
    return {pk: threads.get(where, []) for pk, where in placed.items()}


def _staff_name(message: Message) -> str:
    author: Any = message.author
    if author is None:
        return ""
    profile = getattr(author, "agent_profile", None)
    return (profile.display_name if profile else "") or ""


def visitor_message(message: Message) -> dict[str, Any]:
    return visitor_message_data(
        {
            "id": message.pk,
            "conversation_id": message.conversation_id,
            "direction": message.direction,
            "sender_kind": message.sender_kind,
            "author": {"name": _staff_name(message)} if message.author_id else None,
            "body": message.body,
            "attachments": message.attachments,
            "status": message.status,
            "provider_message_id": message.provider_message_id,
            "created_at": message.created_at.isoformat(),
        }
    )


def visitor_message_data(data: dict[str, Any]) -> dict[str, Any]:
    """The visitor's view of a message shape (the API's, or an event's): no provider ids, flags or errors."""
    author = data.get("author") or {}
    created = data.get("created_at")
    provider_id = str(data.get("provider_message_id") or "")
    return {
        # The widget's own id for a message it sent (see actions.visitor_sends), so it can settle its copy.
        "client_id": provider_id.split("-", 2)[2]
        if data.get("sender_kind") == SenderKind.PATIENT
        and provider_id.startswith("wc-")
        and provider_id.count("-") >= 2
        else None,
        "id": data["id"],
        "direction": data["direction"],
        "from": "patient" if data.get("sender_kind") == SenderKind.PATIENT else "hospital",
        "author": (author.get("name") or "") if isinstance(author, dict) else "",
        "body": data.get("body") or "",
        "images": _visitor_images(data.get("attachments")),
        "status": data.get("status"),
        "created_at": created.isoformat() if isinstance(created, dt.datetime) else created,
    }


def _visitor_images(attachments: object) -> list[dict[str, Any]]:
    """Images as the widget fetches them: a visitor's upload by its file name (through the token-checked
    view, never the staff URL), anything else by its http(s) URL."""
    out: list[dict[str, Any]] = []
    for a in attachments if isinstance(attachments, list) else []:
        if not isinstance(a, dict) or a.get("kind") != "image":
            continue
        if a.get("file"):
            out.append({"file": str(a["file"]), "width": a.get("width"), "height": a.get("height")})
        elif str(a.get("url") or "").startswith(("https://", "http://")):
            out.append({"url": str(a["url"])})
    return out


def webchat_inbox(token: str) -> Inbox | None:
    # From the URL path, where %00 decodes to a NUL that PostgreSQL would refuse: such a token matches nothing.
    token = lookup_key(token, max_length=40)
    if not token:
        return None
    return Inbox.objects.filter(public_token=token, channel_type=ChannelType.WEBCHAT, is_active=True).first()


def upload_for_visitor(*, visitor: WebVisitor, name: str) -> WebUpload | None:
    """The upload if it belongs to one of the visitor's patient's threads in this inbox, else None."""
    upload = WebUpload.objects.select_related("message").filter(name=name).first()
    if upload is None or upload.message.conversation_id not in conversation_ids_of(visitor):
        return None
    return upload


def upload_for_staff(*, user: StaffUser, name: str) -> WebUpload | None:
    """The upload if this staff member may see its conversation, else None."""
    upload = WebUpload.objects.select_related("message__conversation__inbox").filter(name=name).first()
    if upload is None or not can_view_conversation(user, upload.message.conversation):
        return None
    return upload


def history(conversation_ids: list[int]) -> list[dict[str, Any]]:
    rows = (
        Message.objects.filter(conversation_id__in=conversation_ids)
        .select_related("author__agent_profile")
        .order_by("-created_at", "-id")[:HISTORY_LIMIT]
    )
    return [visitor_message(m) for m in reversed(list(rows))]


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


class WidgetEvents(NamedTuple):
    """One read of the visitor's events: what to send, the new cursor (None: nothing after the old one), and
    whether the read reached the end (False: it stopped at the limit, read again from the new cursor)."""

    events: list[dict[str, Any]]
    cursor: int | None
    complete: bool


def widget_events(conversation_ids: list[int], after: int, limit: int) -> WidgetEvents:
    """Events of the visitor's threads after the cursor, in the visitor's shape; and the new cursor.

    Notes, assignment and everything about staff are dropped; the cursor still moves past them. No threads, no
    query (a visitor before their first message).
    """
    if not conversation_ids:
        return WidgetEvents([], None, True)
    rows = list(
        Event.objects.filter(conversation_id__in=conversation_ids, id__gt=after)
        .order_by("id")
        .values_list("id", "type", "op", "payload")[:limit]
    )
    if not rows:
        return WidgetEvents([], None, True)
    out = [shaped for shaped in (_widget_event(*row) for row in rows) if shaped is not None]
    return WidgetEvents(out, rows[-1][0], len(rows) < limit)


class ThreadEvents(NamedTuple):
    """One read of many visitors' threads at once (the process's idle catch-up): each thread's events in the
    visitors' shape, in id order, and the id up to which the read is complete for every thread."""

    by_conversation: dict[int, list[dict[str, Any]]]
    horizon: int


def thread_events(conversation_ids: set[int], after: int, upto: int, limit: int) -> ThreadEvents:
    """The events of these threads with after < id <= upto, at most `limit` rows: complete up to the horizon (upto,
    or the last row read when the limit cut the read short)."""
    by_conversation: dict[int, list[dict[str, Any]]] = {}
    if not conversation_ids or upto <= after:
        return ThreadEvents(by_conversation, max(after, upto))
    rows = list(
        Event.objects.filter(conversation_id__in=conversation_ids, id__gt=after, id__lte=upto)
        .order_by("id")
        .values_list("id", "type", "op", "payload", "conversation_id")[:limit]
    )
    for event_id, type_, op, payload, conversation_id in rows:
        shaped = _widget_event(event_id, type_, op, payload)
        if shaped is not None and conversation_id is not None:
            by_conversation.setdefault(conversation_id, []).append(shaped)
    return ThreadEvents(by_conversation, rows[-1][0] if len(rows) == limit else upto)


def _widget_event(event_id: int, type_: str, op: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    if type_ == "message" and op == "add":
        return {"id": event_id, "kind": "message", "message": visitor_message_data(payload["message"])}
    if type_ == "message" and op == "update_status":
        return {"id": event_id, "kind": "status", "message_id": payload["message_id"], "status": payload["status"]}
    if type_ == "conversation" and op == "update":
        conversation = payload.get("conversation") or {}
        if "unread_count" in (payload.get("changed") or []) and conversation.get("unread_count") == 0:
            # Staff opened the thread (or answered): the visitor's messages have been seen.
            return {"id": event_id, "kind": "seen", "conversation_id": conversation.get("id")}
    return None


def is_staffed(inbox: Inbox, now: dt.datetime | None = None) -> bool:
    """Inside the inbox's business hours (if it sets any) and someone of its team online."""
    hours = inbox.config.get("business_hours")
    if isinstance(hours, dict):
        local = timezone.localtime(now or timezone.now())
        days = hours.get("days", [0, 1, 2, 3, 4, 5, 6])
        opens = str(hours.get("open", "00:00"))
        closes = str(hours.get("close", "24:00"))
        clock = local.strftime("%H:%M")
        if local.weekday() not in days or not (opens <= clock < closes):
            return False
    return AgentProfile.objects.filter(teams=inbox.team_id, availability=Availability.ONLINE).exists()
