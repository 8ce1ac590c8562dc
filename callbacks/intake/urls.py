from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.intake import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.discharge_import, name="discharge-import"),
    path("departments/", views.map_department, name="discharge-map-department"),
]
