"""The batch paths a campaign chunk writes through are the single paths' twins.

conversations_data builds, from bare rows, what ConversationSerializer shows for each conversation;
insert_rows stores exactly what bulk_create would and hands out ids in the objects' order.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contactcenter.api.shapes import ConversationSerializer, conversations_data
from contactcenter.bulk_insert import COPY_FROM_ROWS, insert_rows
from contactcenter.models import (
    Conversation,
    ConversationStatus,
    Event,
    Label,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    Priority,
    SenderKind,
    VipTier,
)
from tests.conftest import World

User = get_user_model()


def _by_label_id(shape: dict[str, Any]) -> dict[str, Any]:
    # Labels have no defined order in either shape; the batch reads them by id.
    return {**shape, "labels": sorted(shape["labels"], key=lambda label: label["id"])}


def test_batch_conversation_shapes_match_the_serializer_field_for_field(world: World) -> None:
    vip = Patient.objects.create(name="王芳", given_name="芳", vip_tier=VipTier.GOLD, language="zh-hans")
    plain = Patient.objects.create(name="Li Lei", language="en")
    urgent, follow_up = Label.objects.create(name="urgent", color="#ff0000"), Label.objects.create(name="follow-up")
    no_profile = User.objects.create_user(username="locum")
    now = timezone.now().replace(microsecond=123456)
    conversations = [
        Conversation.objects.create(patient=vip, inbox=world.inbox_a, team=world.team_a, assignee=world.alice),
        Conversation.objects.create(
            patient=plain,
            inbox=world.inbox_b,
            team=world.team_b,
            status=ConversationStatus.RESOLVED,
            resolved_at=now,
            subject="复诊",
            priority=Priority.URGENT,
            unread_count=3,
            last_message_preview="明天上午九点",
        ),
        Conversation.objects.create(
            patient=plain,
            inbox=world.inbox_a,
            team=world.team_a,
            status=ConversationStatus.SNOOZED,
            snoozed_until=now + dt.timedelta(days=1),
            assignee=no_profile,
        ),
        Conversation.objects.create(
            patient=vip, inbox=world.inbox_b, team=world.team_b, status=ConversationStatus.PENDING
        ),
    ]
    conversations[0].labels.set([follow_up, urgent])
    conversations[2].labels.set([urgent])
    expected = [_by_label_id(dict(ConversationSerializer(c).data)) for c in Conversation.objects.order_by("pk")]
    bare = list(Conversation.objects.order_by("pk"))

    with CaptureQueriesContext(connection) as queries:
        shapes = conversations_data(bare)

    assert [_by_label_id(s) for s in shapes] == expected
    assert [list(s) for s in shapes] == [list(e) for e in expected], "the same keys in the same order"
    # Related rows are read once for the batch, not once per conversation.
    assert len(queries.captured_queries) == 4
    assert conversations_data([]) == []


def _message(conversation: Conversation, body: str, when: dt.datetime) -> Message:
    return Message(
        conversation=conversation,
        inbox=conversation.inbox,
        direction=MessageDirection.OUTBOUND,
        sender_kind=SenderKind.CAMPAIGN,
        body=body,
        attachments=[],
        flags=["campaign"],
        provider_payload={"price": "-0.00750", "segments": 1, "nested": {"a": [1, None, True]}}
        if body.endswith("1")
        else {},
        status=MessageStatus.QUEUED,
        created_at=when,
        status_changed_at=when,
    )


def test_insert_rows_stores_what_bulk_create_would_with_ids_in_order(world: World) -> None:
    patient = Patient.objects.create(name="张伟")
    conversation = Conversation.objects.create(patient=patient, inbox=world.inbox_a, team=world.team_a)
    when = timezone.now()
    bodies = ['引号"和反斜杠\\', "制表\t换行\n", "{大括号}, 逗号", "NULL", "\\N", "message 1"]
    bodies += [f"第{n}条" for n in range(COPY_FROM_ROWS)]
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        ours = insert_rows(Message, [_message(conversation, body, when) for body in bodies])
    assert any(q["sql"].startswith("COPY") for q in queries.captured_queries)
    with transaction.atomic():
        theirs = Message.objects.bulk_create([_message(conversation, body, when) for body in bodies])

    ids = [m.pk for m in ours]
    assert len(set(ids)) == len(bodies)
    assert all(not m._state.adding for m in ours)
    fields = [f.attname for f in Message._meta.concrete_fields if not f.primary_key]
    stored = {m.pk: m for m in Message.objects.filter(pk__in=ids + [m.pk for m in theirs])}
    assert [stored[m.pk].body for m in ours] == bodies, "each object got the id of its own row"
    for mine, bulk in zip(ours, theirs, strict=True):
        assert {f: getattr(stored[mine.pk], f) for f in fields} == {f: getattr(stored[bulk.pk], f) for f in fields}
    # The sequence moved past the ids taken, so ordinary inserts go on after them.
    assert Message.objects.create(**{f: getattr(stored[ids[0]], f) for f in fields}).pk > max(ids)


def test_insert_rows_keeps_event_ids_in_list_order_and_shows_in_the_query_log(db: Any) -> None:
    payloads = [{"n": n, "text": f'第{n}条 "quoted" \\ back'} for n in range(50)]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        rows = insert_rows(Event, [Event(type="test", op="add", payload=p) for p in payloads])
    # Ids in list order: reading back by id gives the payloads in the order they were given.
    assert [row.pk for row in rows] == sorted(row.pk for row in rows)
    assert list(Event.objects.filter(type="test").order_by("id").values_list("payload", flat=True)) == payloads
    assert any(q["sql"].startswith("COPY") for q in queries.captured_queries), "the write is visible to query counting"
    assert insert_rows(Event, []) == []
