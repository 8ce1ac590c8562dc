from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.cases import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.service_cases, name="service-cases"),
]
