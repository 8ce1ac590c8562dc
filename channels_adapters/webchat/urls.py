from __future__ import annotations

from django.urls import path, re_path

from channels_adapters.webchat import views

FILE_NAME = r"(?P<name>[A-Za-z0-9_-]{32}\.(?:jpg|png|webp|gif))"

urlpatterns = [
    path("demo/", views.demo_page, name="webchat-demo"),
    path("<str:token>/upload/", views.upload_image, name="webchat-upload"),
    re_path(rf"^(?P<token>[A-Za-z0-9_-]{{1,40}})/files/{FILE_NAME}$", views.visitor_file, name="webchat-visitor-file"),
    re_path(rf"^files/{FILE_NAME}$", views.staff_file, name="webchat-staff-file"),
]
