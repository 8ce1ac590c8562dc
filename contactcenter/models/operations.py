from __future__ import annotations

from django.db import models


class DueWorkStep(models.Model):
    """How each step of the periodic dispatcher last went, one row per step (and one for the run itself).

    Written by the dispatcher after every run, read by /readyz and the admins' status page: a step that
    keeps failing is visible there instead of only in a log, and a run that stopped happening (beat or the
    embedded loop gone) shows as an old `last_finished_at` on the "dispatch" row.
    """

    RUN = "dispatch"

    name = models.CharField(max_length=60, unique=True)
    last_started_at = models.DateTimeField(null=True)
    last_finished_at = models.DateTimeField(null=True)
    last_ok_at = models.DateTimeField(null=True)
    last_failed_at = models.DateTimeField(null=True)
    # The exception's class and a short message: never patient data (see contactcenter.dispatch).
    last_error = models.CharField(max_length=300, blank=True)
    last_result = models.BigIntegerField(null=True)
    consecutive_failures = models.IntegerField(default=0)
    failures_total = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
