from callbacks.models.calendar import CalendarDay
from callbacks.models.departments import UNMAPPED_DEPARTMENT_CODE, DepartmentCodeMapping
from callbacks.models.discharges import (
    Discharge,
    DischargeStatus,
    Disposition,
    IntakeMessage,
    IntakeOutcome,
    IntakeSource,
)
from callbacks.models.followups import (
    OPEN_STATUSES,
    RETRYABLE_OUTCOMES,
    CallAttempt,
    CallbackTask,
    CallOutcome,
    TaskKind,
    TaskStatus,
)
from callbacks.models.plans import FollowUpPlan, PlanStep, StepKind
from callbacks.models.recovery import (
    Accountability,
    CaseCategory,
    CaseEvent,
    CaseSource,
    CaseStatus,
    ServiceCase,
)
from callbacks.models.surveys import (
    CallScript,
    QuestionKind,
    SessionStatus,
    Survey,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
)

__all__ = [
    "OPEN_STATUSES",
    "RETRYABLE_OUTCOMES",
    "UNMAPPED_DEPARTMENT_CODE",
    "Accountability",
    "CalendarDay",
    "CallAttempt",
    "CallOutcome",
    "CallScript",
    "CallbackTask",
    "CaseCategory",
    "CaseEvent",
    "CaseSource",
    "CaseStatus",
    "DepartmentCodeMapping",
    "Discharge",
    "DischargeStatus",
    "Disposition",
    "FollowUpPlan",
    "IntakeMessage",
    "IntakeOutcome",
    "IntakeSource",
    "PlanStep",
    "QuestionKind",
    "ServiceCase",
    "SessionStatus",
    "StepKind",
    "Survey",
    "SurveyAnswer",
    "SurveyQuestion",
    "SurveySession",
    "TaskKind",
    "TaskStatus",
]
