from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Team(models.Model):
    """A hospital department or service desk. Agents, inboxes, conversations and visits belong to one."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    name_zh = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", _("Admin")
    SUPERVISOR = "supervisor", _("Supervisor")
    AGENT = "agent", _("Agent")
    NURSE = "nurse", _("Follow-up nurse")
    MARKETER = "marketer", _("Marketer")


class Availability(models.TextChoices):
    ONLINE = "online", _("Online")
    BUSY = "busy", _("Busy")
    OFFLINE = "offline", _("Offline")


class AgentProfile(models.Model):
    """Every staff user has one; the role decides what they may see (see contactcenter.access)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_profile")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.AGENT)
    teams = models.ManyToManyField(Team, related_name="members", blank=True)
    availability = models.CharField(max_length=10, choices=Availability.choices, default=Availability.OFFLINE)
    capacity = models.PositiveSmallIntegerField(default=8, help_text=_("Open conversations auto-assigned at most"))
    display_name = models.CharField(max_length=120, blank=True)
    # Round robin hands the next conversation to whoever waited longest since their last one.
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()
