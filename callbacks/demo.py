"""The demo hospital's follow-up: default plans, ~70 discharges over the last 11 weeks and their history.

Recent discharges are left to the real dispatcher, so the first minutes of a demo show calls landing on
the nurses' worklist and SMS surveys going out to the patient phone. Older ones come with a history, so
the reports have something to show: calls recorded through the worklist actions, and survey results
written as an import of past results (sending hundreds of past SMS through the simulator at start-up
would only slow the demo down).
"""

from __future__ import annotations

import datetime as dt
import random

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from callbacks.actions.discharges import Demographics, DischargeRecord, record_discharge
from callbacks.actions.recovery import close_case, open_case, record_first_contact, record_improvement, verify_case
from callbacks.actions.worklist import record_attempt
from callbacks.defaults import DEFAULT_SURVEY_NAME, install_default_plans
from callbacks.models import (
    Accountability,
    CallbackTask,
    CallOutcome,
    CaseCategory,
    CaseSource,
    Discharge,
    Disposition,
    IntakeSource,
    QuestionKind,
    SessionStatus,
    Survey,
    SurveyAnswer,
    SurveySession,
    TaskKind,
    TaskStatus,
)
from callbacks.surveys.flow import SURVEY_INBOX_FLAG, survey_inbox_for
from contactcenter.models import IdentityKind, Inbox, PatientIdentity, Team

DEPARTMENTS = ("cardiology", "orthopedics", "obstetrics")
DOCTORS = {
    "cardiology": ["Dr. Sun 孙医生", "Dr. Ma 马医生"],
    "orthopedics": ["Dr. Hu 胡医生", "Dr. Guo 郭医生"],
    "obstetrics": ["Dr. He 何医生", "Dr. Gao 高医生"],
}
NURSES = {
    "cardiology": ["Nurse Zhang 张护士", "Nurse Wu 吴护士"],
    "orthopedics": ["Nurse Liu 刘护士", "Nurse Xu 徐护士"],
    "obstetrics": ["Nurse Zhou 周护士"],
}
DIAGNOSES = {
    "cardiology": [("I21.4", "NSTEMI"), ("I50.9", "Heart failure"), ("I48.0", "Paroxysmal AF")],
    "orthopedics": [("S72.0", "Fracture of neck of femur"), ("M17.1", "Primary gonarthrosis")],
    "obstetrics": [("O80", "Single spontaneous delivery"), ("O82", "Caesarean delivery")],
}
COMMENTS = [
    "护士都很耐心，谢谢！",
    "出院手续办得很快。",
    "Everything was fine, thank you.",
    "病房晚上有点吵。",
    "等了很久才见到医生，态度也不好。",
    "",
]


def seed_followup(
    *, rng: random.Random, staff: dict[str, User], mrns: list[str], survey_inbox: Inbox
) -> dict[str, int]:
    install_default_plans()
    # Departments without an SMS number of their own send surveys from the hospital's main number.
    survey_inbox.config = {**survey_inbox.config, SURVEY_INBOX_FLAG: True}
    survey_inbox.save(update_fields=["config"])
    now = timezone.now()
    discharges = _discharges(rng, mrns, now)
    history = _history(rng, staff, now)
    return {"discharges": discharges, **history}


def _discharges(rng: random.Random, mrns: list[str], now: dt.datetime) -> int:
    count = 0
    for index, mrn in enumerate(rng.sample(mrns, min(70, len(mrns)))):
        department = DEPARTMENTS[index % len(DEPARTMENTS)]
        # A dozen fresh discharges keep the worklist busy; the rest spread over the last 11 weeks.
        days_ago = rng.uniform(0.2, 3) if index < 12 else rng.uniform(3, 77)
        disposition = {0: Disposition.EXPIRED, 1: Disposition.TRANSFERRED}.get(index, Disposition.HOME)
        code, text = rng.choice(DIAGNOSES[department])
        discharged_at = now - dt.timedelta(days=days_ago)
        record_discharge(
            DischargeRecord(
                visit_number=f"IP{2026_000 + index}",
                demographics=Demographics(mrn=mrn),
                department_code=department,
                discharged_at=discharged_at,
                source=IntakeSource.DEMO,
                ward=f"{department[:4].upper()}-{rng.randint(1, 6)}",
                attending_doctor=rng.choice(DOCTORS[department]),
                primary_nurse=rng.choice(NURSES[department]),
                disposition=disposition,
                disposition_code={Disposition.EXPIRED: "20", Disposition.TRANSFERRED: "02"}.get(disposition, "01"),
                diagnoses=[{"code": code, "text": text, "system": "I10"}],
            ),
            # History as it happened: each discharge planned when the HIS reported it, not weeks late (which
            # would plan every step as expired).
            now=discharged_at,
        )
        count += 1
    return count


def _history(rng: random.Random, staff: dict[str, User], now: dt.datetime) -> dict[str, int]:
    """Work every task that was due more than two days ago, as the nurses and patients would have."""
    nurses = {"cardiology": staff["nurse1"], "orthopedics": staff["nurse2"], "obstetrics": staff["supervisor"]}
    survey = Survey.objects.get(name=DEFAULT_SURVEY_NAME)
    calls = surveys = 0
    past = (
        CallbackTask.objects.filter(status=TaskStatus.SCHEDULED, due_at__lt=now - dt.timedelta(days=2))
        .select_related("discharge", "department", "patient")
        .order_by("due_at")
    )
    for task in past:
        if task.kind == TaskKind.CALL:
            _past_call(rng, task, nurses[task.department.code])
            calls += 1
        elif _past_survey(rng, task, survey, staff["supervisor"]):
            surveys += 1
    return {"calls_recorded": calls, "surveys_answered": surveys}


def _past_call(rng: random.Random, task: CallbackTask, nurse: User) -> None:
    # Imported history: the dispatcher would have opened this task on its due day.
    CallbackTask.objects.filter(pk=task.pk).update(status=TaskStatus.OPEN, opened_at=task.due_at, next_action_at=None)
    task.refresh_from_db()
    at = task.due_at + dt.timedelta(hours=rng.uniform(0.5, 6))
    if rng.random() < 0.3:
        record_attempt(task=task, nurse=nurse, outcome=CallOutcome.NO_ANSWER, now=at)
        task.refresh_from_db()
        if task.status != TaskStatus.OPEN:
            return
        at = (task.retry_at or at) + dt.timedelta(minutes=20)
    answers = {
        "feeling": rng.choices([5, 4, 3, 2], weights=[4, 4, 2, 1])[0],
        "medication_understood": rng.random() < 0.9,
        "appointment_booked": rng.random() < 0.8,
        "concerns": "",
    }
    if task.step is None or task.step.call_script_id is None:
        # A survey step made a call (no mobile, opted out of SMS): its step has no script to answer.
        answers = {}
    record_attempt(task=task, nurse=nurse, outcome=CallOutcome.REACHED, answers=answers, now=at)


def _past_survey(rng: random.Random, task: CallbackTask, survey: Survey, relations: User) -> bool:
    discharge: Discharge = task.discharge
    inbox = survey_inbox_for(discharge.department)
    if inbox is None:
        return False
    started = task.due_at
    answered = rng.random() < 0.8
    with transaction.atomic():
        session = SurveySession.objects.create(
            survey=survey,
            patient=task.patient,
            inbox=inbox,
            discharge=discharge,
            task=task,
            status=SessionStatus.COMPLETED if answered else SessionStatus.NO_RESPONSE,
            started_at=started,
            last_prompt_at=started,
            closed_at=started + dt.timedelta(hours=3 if answered else 72),
        )
        CallbackTask.objects.filter(pk=task.pk).update(
            status=TaskStatus.COMPLETED,
            opened_at=started,
            completed_at=session.closed_at,
            outcome="survey_completed" if answered else "no_response",
            next_action_at=None,
        )
        if not answered:
            return False
        mood = rng.choices(["happy", "fine", "unhappy"], weights=[6, 3, 1])[0]
        low = None
        for question in survey.questions.order_by("position"):
            value: int | None
            text = ""
            if question.kind == QuestionKind.RATING:
                value = {"happy": rng.choice([5, 5, 4]), "fine": rng.choice([4, 3]), "unhappy": rng.choice([1, 2])}[
                    mood
                ]
                if value <= survey.low_score_threshold and low is None:
                    low = f"{question.key}: {value}"
            elif question.kind == QuestionKind.NPS:
                value = {"happy": rng.choice([9, 10, 10]), "fine": rng.choice([7, 8, 6]), "unhappy": rng.randint(0, 5)}[
                    mood
                ]
            else:
                value = None
                text = COMMENTS[-2] if mood == "unhappy" else rng.choice([*COMMENTS[:4], ""])
            SurveyAnswer.objects.create(
                session=session,
                question=question,
                raw_text=text or str(value),
                value=value,
                text=text,
                negative=mood == "unhappy" and question.kind == QuestionKind.FREE_TEXT,
                answered_at=started + dt.timedelta(minutes=10 * question.position),
            )
    if low is not None:
        _past_case(rng, session, discharge, low, relations)
    return True


def _past_case(rng: random.Random, session: SurveySession, discharge: Discharge, low: str, actor: User) -> None:
    opened = session.closed_at or session.started_at
    case = open_case(
        patient=session.patient,
        source=CaseSource.SURVEY_SCORE,
        summary=f"Low survey score ({low})",
        discharge=discharge,
        survey_session=session,
        now=opened,
    )
    stage = rng.random()
    if stage < 0.25:
        return  # still waiting for patient relations: shows up as escalated once its SLA passes
    record_first_contact(
        case=case, actor=actor, note="Called the patient and apologised.", now=opened + dt.timedelta(hours=5)
    )
    if stage < 0.5:
        return
    verify_case(
        case=case,
        actor=actor,
        cause="Long wait for the ward round; the patient was not told why.",
        category=CaseCategory.WAITING,
        accountable_department=Team.objects.get(pk=discharge.department_id),
        accountable_staff=discharge.attending_doctor,
        now=opened + dt.timedelta(days=1),
    )
    record_improvement(
        case=case, actor=actor, action_taken="Ward round times posted on the ward.", now=opened + dt.timedelta(days=3)
    )
    if stage < 0.75:
        return
    close_case(case=case, actor=actor, accountability=Accountability.TRAINING, now=opened + dt.timedelta(days=6))


def demo_mrns() -> list[str]:
    return list(PatientIdentity.objects.filter(kind=IdentityKind.MRN).order_by("pk").values_list("value", flat=True))
