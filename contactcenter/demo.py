"""The demo hospital: departments, staff with printed logins, ~200 patients with visit histories, their
marketing consent, and some live conversations. Built only through actions, so the demo exercises the
real paths."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from channels_adapters.base import InboundMessage, Sender
from contactcenter.actions.consent import record_consent
from contactcenter.actions.conversations import add_note, resolve_conversation, set_labels
from contactcenter.actions.inbound import receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import create_patient
from contactcenter.actions.visits import record_visit
from contactcenter.models import (
    AgentProfile,
    Availability,
    CannedResponse,
    ChannelType,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Gender,
    IdentityKind,
    Inbox,
    Label,
    Patient,
    Role,
    Team,
    VipTier,
    VisitKind,
)

DEMO_PASSWORD = "hospital-demo"

DEPARTMENTS = [
    ("service", "Patient Service Center", "客服中心"),
    ("cardiology", "Cardiology", "心内科"),
    ("orthopedics", "Orthopedics", "骨科"),
    ("obstetrics", "Obstetrics & Gynecology", "妇产科"),
    ("health-check", "Health Check Center", "体检中心"),
]


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    teams: tuple[str, ...]
    display_name: str


LOGINS = [
    DemoLogin("admin", Role.ADMIN, (), "Admin 管理员"),
    DemoLogin("supervisor", Role.SUPERVISOR, ("service", "cardiology"), "Zhou Min 周敏"),
    DemoLogin("agent1", Role.AGENT, ("service",), "Li Na 李娜"),
    DemoLogin("agent2", Role.AGENT, ("service",), "Chen Jie 陈杰"),
    DemoLogin("agent3", Role.AGENT, ("cardiology",), "Wang Lei 王磊"),
    DemoLogin("nurse1", Role.NURSE, ("cardiology",), "Nurse Zhang 张护士"),
    DemoLogin("nurse2", Role.NURSE, ("orthopedics",), "Nurse Liu 刘护士"),
    DemoLogin("marketer", Role.MARKETER, (), "Huang Ting 黄婷"),
]

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = [
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "涛",
    "明",
    "超",
    "秀英",
    "桂英",
    "建华",
    "志强",
    "晓燕",
]
DISTRICTS = [
    ("天河区", "广州"),
    ("越秀区", "广州"),
    ("海珠区", "广州"),
    ("番禺区", "广州"),
    ("白云区", "广州"),
    ("福田区", "深圳"),
]
DOCTORS = {
    "cardiology": ["Dr. Sun 孙医生", "Dr. Ma 马医生"],
    "orthopedics": ["Dr. Hu 胡医生", "Dr. Guo 郭医生"],
    "obstetrics": ["Dr. He 何医生", "Dr. Gao 高医生"],
    "health-check": ["Dr. Lin 林医生"],
    "service": ["Dr. Luo 罗医生"],
}
PACKAGES = ["Basic check 基础体检", "Executive check 高端体检", "Women's health 女性健康", "Cardiac screen 心脏筛查"]

PATIENT_OPENERS = [
    "你好，我想预约下周的复查",
    "请问体检报告什么时候可以拿？",
    "Hello, can I change my appointment to Friday?",
    "医生说要复诊，怎么挂号？",
    "停车场在哪里？",
    "I was discharged yesterday, who do I call if the pain gets worse?",
    "我妈妈出院后需要注意什么？",
    "发票可以邮寄吗？",
]
AGENT_REPLIES = [
    "您好，已为您查询，请稍等。",
    "Thanks for reaching out — I'm checking that for you now.",
    "您好，可以的，我帮您改约到周五上午。",
]


def seed_demo(*, patients: int = 200, rng_seed: int = 20261123) -> dict[str, int]:
    if Team.objects.exists():
        return {"skipped": 1}
    rng = random.Random(rng_seed)
    with transaction.atomic():
        teams = {code: Team.objects.create(code=code, name=name, name_zh=zh) for code, name, zh in DEPARTMENTS}
        staff = _staff(teams)
        inboxes = _inboxes(teams)
        _reference_data(teams)
        people = _patients(rng, teams, patients)
        # Its own random stream, so the rest of the demo comes out as before.
        _marketing_consents(random.Random(rng_seed + 1), people)
    conversations = _conversations(rng, inboxes, staff, people)
    from callbacks.demo import demo_mrns, seed_followup

    followup = seed_followup(rng=rng, staff=staff, mrns=demo_mrns(), survey_inbox=inboxes["service"])
    return {
        "teams": len(teams),
        "staff": len(staff),
        "patients": len(people),
        "conversations": conversations,
        **followup,
    }


def _staff(teams: dict[str, Team]) -> dict[str, User]:
    users = {}
    for login in LOGINS:
        user = User.objects.create_user(username=login.username, password=DEMO_PASSWORD)
        if login.role == Role.ADMIN:
            user.is_staff = True
            user.is_superuser = True
            user.save()
        availability = Availability.ONLINE if login.role == Role.AGENT else Availability.OFFLINE
        profile = AgentProfile.objects.create(
            user=user, role=login.role, display_name=login.display_name, availability=availability
        )
        profile.teams.set([teams[code] for code in login.teams])
        users[login.username] = user
    return users


DEMO_ACCOUNT_SID = "AC" + "de30" * 8
DEMO_SERVICE_NUMBER = "+862012345678"
DEMO_CARDIOLOGY_SERVICE = "MG" + "ca7d" * 8


def _inboxes(teams: dict[str, Team]) -> dict[str, Inbox]:
    """Twilio SMS inboxes; in the embedded mode the SDK talks to the simulator, never to Twilio."""
    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox

    service = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Hospital SMS 医院短信",
            team=teams["service"],
            account_sid=DEMO_ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[DEMO_SERVICE_NUMBER],
            messaging_service_sid="",
            auto_assign=True,
        ),
    )
    cardiology = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology line 心内科",
            team=teams["cardiology"],
            account_sid=DEMO_ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=["+862012345679"],
            messaging_service_sid=DEMO_CARDIOLOGY_SERVICE,
            auto_assign=True,
        ),
    )
    # The hospital's mailbox: a web chat reply to a patient who left the page and gave only an email goes
    # there (the embedded demo keeps the emails for the patient mailbox page; nothing leaves the machine).
    email = Inbox.objects.create(
        name="Hospital email 医院邮箱", channel_type=ChannelType.EMAIL, team=teams["service"], auto_assign=True
    )
    webchat = _webchat_inbox(teams["service"], sms_inbox=service, email_inbox=email)
    return {"service": service, "cardiology": cardiology, "email": email, "webchat": webchat}


def _webchat_inbox(team: Team, *, sms_inbox: Inbox, email_inbox: Inbox) -> Inbox:
    """The website chat, embedded on the demo hospital page the platform serves (/webchat/demo/)."""
    from django.conf import settings

    port = settings.PUBLIC_BASE_URL.rsplit(":", 1)[-1] if settings.PUBLIC_BASE_URL.count(":") == 2 else ""
    own = [settings.PUBLIC_BASE_URL] + ([f"http://localhost:{port}", f"http://127.0.0.1:{port}"] if port else [])
    return Inbox.objects.create(
        name="Website chat 网站咨询",
        channel_type=ChannelType.WEBCHAT,
        team=team,
        auto_assign=True,
        config={
            "allowed_origins": sorted(set(own)),
            "title": {"en": "Kanghua Hospital", "zh-hans": "康华医院在线咨询"},
            "consent_text": {
                "en": "I agree that Kanghua Hospital may use these details to answer my enquiry and to contact "
                "me about it by phone, SMS or email.",
                "zh-hans": "我同意康华医院使用以上信息答复我的咨询，并通过电话、短信或电子邮件就此与我联系。",
            },
            "business_hours": {"days": [0, 1, 2, 3, 4, 5], "open": "08:00", "close": "21:00"},
            "identity_kind": "mrn",
            "identity_secret_env": "WEBCHAT_IDENTITY_SECRET",
            "offline_sms_inbox_id": sms_inbox.pk,
            "offline_sms_prefix": "【康华医院】",
            "offline_email_inbox_id": email_inbox.pk,
            # Offline replies by email carry a link back to the chat.
            "page_url": f"{settings.PUBLIC_BASE_URL}/webchat/demo/",
        },
    )


def _reference_data(teams: dict[str, Team]) -> None:
    for name, color in [
        ("appointment", "#2563eb"),
        ("billing", "#d97706"),
        ("complaint", "#dc2626"),
        ("follow-up", "#059669"),
    ]:
        Label.objects.create(name=name, color=color)
    CannedResponse.objects.create(short_code="greeting", content="您好，这里是医院客服中心，请问有什么可以帮您？")
    CannedResponse.objects.create(
        short_code="hours", content="Our outpatient clinics are open 08:00–17:30, Monday to Saturday."
    )
    CannedResponse.objects.create(
        short_code="appointment", content="您可以通过微信公众号或拨打 020-12345678 预约挂号。"
    )
    CannedResponse.objects.create(
        short_code="followup",
        content="出院后如有不适请及时复诊，护士会在两个工作日内联系您。",
        team=teams["cardiology"],
    )


def _patients(rng: random.Random, teams: dict[str, Team], count: int) -> list[tuple[int, str]]:
    people = []
    now = timezone.now()
    visit_departments = [t for code, t in teams.items() if code != "service"]
    used_numbers: set[str] = set()
    for index in range(count):
        gender = rng.choice([Gender.FEMALE, Gender.MALE])
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        district, city = rng.choice(DISTRICTS)
        number = _mobile(rng, used_numbers)
        identities: list[tuple[str, str]] = [(IdentityKind.PHONE, number), (IdentityKind.MRN, f"MRN{100000 + index}")]
        if rng.random() < 0.3:
            identities.append((IdentityKind.EMAIL, f"patient{index}@example.com"))
        birth = dt.date(rng.randint(1940, 2004), rng.randint(1, 12), rng.randint(1, 28))
        patient = create_patient(
            fields={
                "name": name,
                "given_name": name[1:],
                "gender": gender,
                "birth_date": birth,
                "region": district,
                "city": city,
                "language": "en" if rng.random() < 0.1 else "zh-hans",
                "vip_tier": rng.choices(list(VipTier.values), weights=[80, 10, 7, 3])[0],
            },
            identities=identities,
            tags=rng.sample(
                ["diabetes-education", "prefers-sms", "wechat", "family-contact", "insurance"], rng.randint(0, 2)
            ),
        )
        for visit_index in range(rng.randint(1, 5)):
            department = rng.choice(visit_departments)
            admitted = now - dt.timedelta(days=rng.randint(3, 900), hours=rng.randint(0, 23))
            inpatient = department.code in ("cardiology", "orthopedics", "obstetrics") and rng.random() < 0.4
            kind = (
                VisitKind.HEALTH_CHECK
                if department.code == "health-check"
                else (VisitKind.INPATIENT if inpatient else VisitKind.OUTPATIENT)
            )
            record_visit(
                patient=patient,
                visit_number=f"V{index:04d}{visit_index:02d}",
                department=department,
                kind=kind,
                admitted_at=admitted,
                discharged_at=admitted + dt.timedelta(days=rng.randint(2, 12)) if inpatient else None,
                doctor=rng.choice(DOCTORS[department.code]),
                ward=f"{department.code[:4].upper()}-{rng.randint(1, 6)}" if inpatient else "",
                package=rng.choice(PACKAGES) if kind == VisitKind.HEALTH_CHECK else "",
                amount=Decimal(rng.randint(80, 30000)),
            )
        people.append((patient.pk, number))
    return people


def _marketing_consents(rng: random.Random, people: list[tuple[int, str]]) -> None:
    """Marketing consent as a hospital has it: most patients never asked (unknown, so no campaigns under the
    default opt-in policy), about half who signed the marketing box on the registration form (recorded by the
    hospital system), and a few who texted 退订. The marketer's segments then have people to send to, and
    the estimate shows who is left out for consent."""
    for patient_id, _number in people:
        roll = rng.random()
        if roll < 0.05:
            status, source, keyword = ConsentStatus.OPTED_OUT, ConsentSource.KEYWORD, "退订"
        elif roll < 0.55:
            status, source, keyword = ConsentStatus.OPTED_IN, ConsentSource.API, ""
        else:
            continue
        record_consent(
            patient=Patient.objects.get(pk=patient_id),
            purpose=ConsentPurpose.MARKETING,
            status=status,
            source=source,
            channel="sms" if keyword else "",
            keyword=keyword,
        )


def _mobile(rng: random.Random, used: set[str]) -> str:
    while True:
        number = f"+86{rng.choice(['138', '139', '186', '135', '150', '177'])}{rng.randint(0, 99999999):08d}"
        if number not in used:
            used.add(number)
            return number


def _conversations(
    rng: random.Random, inboxes: dict[str, Inbox], staff: dict[str, User], people: list[tuple[int, str]]
) -> int:
    count = 0
    for patient_id, number in rng.sample(people, 24):
        inbox = inboxes["cardiology"] if rng.random() < 0.3 else inboxes["service"]
        result = receive_inbound(
            InboundMessage(
                inbox_id=inbox.pk,
                sender=Sender(kind=IdentityKind.PHONE, value=number),
                body=rng.choice(PATIENT_OPENERS),
                provider_message_id=f"SIM-SEED-{patient_id}",
            )
        )
        count += 1
        roll = rng.random()
        agent = staff["agent3"] if inbox is inboxes["cardiology"] else staff[rng.choice(["agent1", "agent2"])]
        if roll < 0.5:
            send_outbound(conversation=result.conversation, body=rng.choice(AGENT_REPLIES), author=agent)
        if roll < 0.2:
            add_note(conversation=result.conversation, author=agent, body="Patient prefers calls after 18:00.")
            set_labels(conversation=result.conversation, label_names=["appointment"], actor=agent)
        if 0.2 <= roll < 0.3:
            resolve_conversation(conversation=result.conversation, actor=agent)
    return count
