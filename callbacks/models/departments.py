from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Team

# The department a discharge is filed under while its HIS code is mapped to none of ours. One fixed team,
# never one per code: nurses are not on it, so its tasks show to supervisors and admins, who map the code.
UNMAPPED_DEPARTMENT_CODE = "his-unmapped"


class DepartmentCodeMapping(models.Model):
    """An HIS department code (HL7 PV1-10 hospital service, FHIR serviceType, the REST/CSV department_code)
    and the department it means here. The HIS's codes are its own ("CAR", "0301"); ours are Team.code."""

    system = models.CharField(
        max_length=200,
        blank=True,
        help_text=_(
            "The code system, for FHIR serviceType codes that name one; empty for HL7, REST and CSV codes, "
            "and to match the code from any system."
        ),
    )
    code = models.CharField(max_length=40, help_text=_("The code as the HIS sends it (letter case is ignored)."))
    department = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="his_department_codes")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["system", "code"]
        verbose_name = _("HIS department code")
        constraints = [
            models.UniqueConstraint(
                models.F("system"),
                Upper("code"),
                name="his_department_code_unique",
                violation_error_message=_("This HIS code is already mapped."),
            )
        ]

    def __str__(self) -> str:
        return f"{self.system or '*'} {self.code}"
