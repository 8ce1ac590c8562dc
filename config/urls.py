from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("contactcenter.urls")),
    path("api/v1/", include("contactcenter.api.urls")),
    path("api/v1/his/", include("callbacks.intake.api_urls")),
    path("api/v1/followup/", include("callbacks.api_urls")),
    path("followup/", include("callbacks.urls")),
    path("api/v1/campaigns/", include("campaigns.api_urls")),
    path("campaigns/", include("campaigns.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("webhooks/twilio/sms/", include("channels_adapters.sms.urls")),
    path("settings/inboxes/sms/", include("channels_adapters.sms.settings_urls")),
    path("webchat/", include("channels_adapters.webchat.urls")),
    path("django-admin/", admin.site.urls),
]
if settings.SIMULATOR_ENABLED:
    urlpatterns.append(path("simulator/", include("channels_adapters.simulator.urls")))

# A database that went away answers 503 + Retry-After wherever it was noticed (contactcenter.resilience).
handler500 = "contactcenter.resilience.server_error"
