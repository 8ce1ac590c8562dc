"""Django admin for hospital IT: teams, inboxes, staff and their roles, canned responses, labels.

Patient data (patients, conversations, messages) is deliberately not registered here: every staff
read of it must be audited, and the inbox and API do that; the admin would not.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import User
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse

from contactcenter.actions import staff
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

    # A deactivation or a new password saved by these forms is noticed on the user row's save
    # (contactcenter.actions.staff.on_user_pre_save); this names the admin who made it for the audit entry.
    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        with staff.changes_by(request.user if request.user.is_authenticated else None):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        with staff.changes_by(request.user if request.user.is_authenticated else None):
            return super().user_change_password(request, id, form_url)

    def save_formset(
        self, request: HttpRequest, form: ModelForm[Any], formset: BaseInlineFormSet[Any, Any, Any], change: bool
    ) -> None:
        """Role and teams of an existing staff member change through staff.update_staff_access, not the form.

        The action unassigns what they may no longer see, audits the change and closes their sockets; the
        inline form would only write the rows. The form still saves the profile's other fields.
        """
        if formset.model is not AgentProfile:
            super().save_formset(request, form, formset, change)
            return
        wanted: list[tuple[User, str, list[int]]] = []
        for inline in formset.forms:
            profile = inline.instance
            data = getattr(inline, "cleaned_data", None)
            if profile.pk is None or not data:
                continue  # a new staff member: nothing to take away yet
            stored = AgentProfile.objects.get(pk=profile.pk)
            wanted.append((profile.user, profile.role, [team.pk for team in data.get("teams", [])]))
            profile.role = stored.role
            data["teams"] = list(stored.teams.all())
        super().save_formset(request, form, formset, change)
        actor = request.user if isinstance(request.user, User) else None
        for user, role, team_ids in wanted:
            staff.update_staff_access(user=user, role=role, team_ids=team_ids, actor=actor, via="ui")


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
