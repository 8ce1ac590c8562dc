"""The HIS-facing API at /api/v1/his/: bearer-token callers only, no staff session."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.intake import api, fhir

urlpatterns: list[URLPattern | URLResolver] = [
    path("discharges/", api.DischargeIntakeView.as_view(), name="his-discharges"),
    path("discharges/<str:visit_number>/cancel/", api.DischargeCancelView.as_view(), name="his-discharge-cancel"),
    path("patients/demographics/", api.DemographicsView.as_view(), name="his-demographics"),
    path("fhir/Encounter", fhir.EncounterView.as_view(), name="his-fhir-encounter"),
    path("fhir/Encounter/<int:encounter_id>", fhir.EncounterReadView.as_view(), name="his-fhir-encounter-read"),
]
