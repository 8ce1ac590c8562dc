"""Follow-up pages for staff. The HIS-facing API lives under /api/v1/his/ (see config/urls.py)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("callbacks.worklist.urls")),
    path("cases/", include("callbacks.cases.urls")),
    path("reports/", include("callbacks.reports.urls")),
    path("discharges/", include("callbacks.intake.urls")),
]
