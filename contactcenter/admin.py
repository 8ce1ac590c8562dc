"""Django admin for hospital IT: teams, inboxes, staff and their roles, canned responses, labels.

Patient data (patients, conversations, messages) is deliberately not registered here: every staff
read of it must be audited, and the inbox and API do that; the admin would not.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import User
from django.http import HttpRequest

from contactcenter.models import AgentProfile, AuditLogEntry, CannedResponse, Inbox, Label, Team


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "name_zh"]
    search_fields = ["code", "name", "name_zh"]


@admin.register(Inbox)
class InboxAdmin(admin.ModelAdmin):
    list_display = ["name", "channel_type", "team", "auto_assign", "is_active"]
    list_filter = ["channel_type", "team", "is_active"]
    readonly_fields = ["public_token"]


class AgentProfileInline(admin.StackedInline):
    model = AgentProfile
    can_delete = False
    filter_horizontal = ["teams"]
    fields = ["role", "display_name", "teams", "availability", "capacity"]


admin.site.unregister(User)


@admin.register(User)
class StaffUserAdmin(BaseUserAdmin):
    inlines = [AgentProfileInline]
    list_display = ["username", "role", "is_active", "last_login"]

    @admin.display(description="role")
    def role(self, user: User) -> str:
        profile = getattr(user, "agent_profile", None)
        return profile.get_role_display() if profile else "—"


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ["short_code", "team"]
    list_filter = ["team"]
    search_fields = ["short_code", "content"]


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ["name", "color"]


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only, even for admins."""

    list_display = ["at", "actor", "action", "patient_id", "object_type", "object_id", "via", "ip_address"]
    list_filter = ["action", "via"]
    search_fields = ["actor__username", "=patient_id", "=object_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLogEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLogEntry | None = None) -> bool:
        return False
