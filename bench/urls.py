"""config.urls plus /bench/trivial/: the baseline every figure is a ratio to.

The trivial view is csrf_exempt so the baseline can be the very same POST (same form body, same
headers) as a webhook: what remains between the two is the webhook's own work.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as product_urlpatterns


def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns: list[URLPattern | URLResolver] = [
    path("bench/trivial/", csrf_exempt(trivial), name="bench-trivial"),
    *product_urlpatterns,
]
