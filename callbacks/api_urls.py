from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("callbacks.worklist.api_urls")),
    path("cases/", include("callbacks.cases.api_urls")),
]
