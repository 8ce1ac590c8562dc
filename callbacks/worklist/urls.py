from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.worklist import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.worklist, name="followup-worklist"),
]
