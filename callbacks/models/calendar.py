from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class CalendarDay(models.Model):
    """An exception to the Monday–Friday week: a public holiday, or a weekend made a working day (调休)."""

    date = models.DateField(unique=True)
    is_workday = models.BooleanField(default=False)
    name = models.CharField(max_length=80, blank=True, help_text=_("e.g. National Day / 国庆节"))

    class Meta:
        ordering = ["date"]

    def __str__(self) -> str:
        return f"{self.date} {'workday' if self.is_workday else 'holiday'}"
