from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.reports import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.reports_page, name="followup-reports"),
    path("export.csv", views.export_csv, name="followup-reports-export"),
]
