from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns import lifecycle_views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", lifecycle_views.lifecycle_page, name="campaigns-lifecycle"),
]
