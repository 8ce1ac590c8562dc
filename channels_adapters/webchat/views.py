"""The demo hospital page with the widget on it (the widget itself is a static file, static/webchat/), and
the widget's image upload and the two guarded ways to fetch an uploaded image (visitor, staff)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from channels_adapters.simulator.guard import from_this_machine
from channels_adapters.webchat import actions, limits, selectors
from channels_adapters.webchat.identity import identity_hash, identity_secret, unsign_visitor
from channels_adapters.webchat.images import check_image
from channels_adapters.webchat.models import WebUpload, WebVisitor
from contactcenter.actions.audit import audit_read
from contactcenter.models import AuditAction, ChannelType, Inbox

logger = logging.getLogger(__name__)


def demo_page(request: HttpRequest) -> HttpResponse:
    """A made-up hospital website embedding the widget of the first active web chat inbox.

    `?lang=zh-hans` switches the page (and so the widget) to Chinese. `?user=…&hash=…` are put on the
    script tag as a hospital portal would render them. In the embedded demo only, `?sign_as=MRN…`
    signs that identity server-side, standing in for a portal's signed-in patient.
    """
    inbox = Inbox.objects.filter(channel_type=ChannelType.WEBCHAT, is_active=True).order_by("id").first()
    if inbox is None:
        raise Http404("no web chat inbox")
    lang = "zh-hans" if request.GET.get("lang", "").lower().startswith("zh") else "en"
    user_id = request.GET.get("user", "")[:128]
    user_hash = request.GET.get("hash", "")[:128]
    sign_as = request.GET.get("sign_as", "")[:128]
    # Signing as any patient is a simulator feature: this machine only, like the simulator's pages.
    if sign_as and settings.SIMULATOR_ENABLED and from_this_machine(request) and identity_secret(inbox):
        user_id, user_hash = sign_as, identity_hash(identity_secret(inbox), sign_as)
    return render(
        request,
        "webchat/demo.html",
        {"inbox": inbox, "lang": lang, "user_id": user_id, "user_hash": user_hash},
    )


# --- images -------------------------------------------------------------------------------------------------
#
# The widget runs on the hospital's own sites, so these are cross-origin by design: the Origin must be one of
# the inbox's allowed_origins (answered with CORS headers for exactly that origin), and the caller proves who
# it is with the signed visitor token in the X-Visitor-Token header, never a cookie. That is why they are
# CSRF-exempt: there is no ambient credential a forged request could ride on.

VISITOR_HEADER = "X-Visitor-Token"
# Room for the multipart envelope around the image.
MULTIPART_OVERHEAD = 64 * 1024


def _origin(request: HttpRequest) -> str:
    return str(request.headers.get("Origin") or "").rstrip("/")


def _allowed(inbox: Inbox, origin: str) -> bool:
    return bool(origin) and origin in (inbox.config.get("allowed_origins") or [])


def _cors(response: HttpResponseBase, origin: str) -> HttpResponseBase:
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = VISITOR_HEADER
        response["Access-Control-Max-Age"] = "600"
    response["Vary"] = "Origin"
    return response


def _refuse(status: int, code: str, message: str, origin: str = "") -> HttpResponseBase:
    return _cors(JsonResponse({"code": code, "message": message}, status=status), origin)


def _visitor(request: HttpRequest, inbox: Inbox) -> WebVisitor | None:
    visitor_id = unsign_visitor(inbox=inbox, token=request.headers.get(VISITOR_HEADER))
    return selectors.visitor_by_id(inbox=inbox, visitor_id=visitor_id) if visitor_id else None


def _client_ip(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _file_response(upload: WebUpload) -> HttpResponseBase:
    path = actions.upload_path(upload.name)
    if not path.is_file():
        raise Http404("no such file")
    response = FileResponse(path.open("rb"), content_type=upload.content_type)
    response["Content-Disposition"] = f'inline; filename="{upload.name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


@csrf_exempt
@require_http_methods(["POST", "OPTIONS"])
def upload_image(request: HttpRequest, token: str) -> HttpResponseBase:
    """POST multipart: `image` (a JPEG, PNG, WebP or GIF) and `client_id`; X-Visitor-Token: the widget's token.

    201 {"message_id"}; otherwise {"code", "message"} with 400 (not an image), 403 (origin or token),
    404 (inbox), 413 (too large) or 429 (too many). Nothing is stored unless it is answered 201.
    """
    inbox = selectors.webchat_inbox(token)
    if inbox is None:
        return _refuse(404, "unknown_inbox", "No such chat.")
    origin = _origin(request)
    if not _allowed(inbox, origin):
        logger.info("web chat upload for inbox %s refused: origin not allowed", inbox.pk)
        return _refuse(403, "origin_refused", "This site may not use this chat.")
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), origin)
    limit = settings.WEBCHAT_MAX_IMAGE_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        return _refuse(413, "image_too_large", f"An image can be at most {limit // 1024} KB.", origin)
    visitor = _visitor(request, inbox)
    if visitor is None:
        return _refuse(403, "unknown_visitor", "Start a new chat.", origin)
    if not limits.allow("upload", visitor.visitor_id, limit=settings.WEBCHAT_UPLOADS_PER_MINUTE_PER_VISITOR):
        return _refuse(429, "rate_limited", "You are sending images too quickly; wait a minute.", origin)
    if not limits.allow("upload-ip", _client_ip(request), limit=settings.WEBCHAT_UPLOADS_PER_MINUTE_PER_IP):
        return _refuse(429, "rate_limited", "Too many images from this address; wait a minute.", origin)
    try:
        file = request.FILES.get("image")
        client_id = request.POST.get("client_id")
    except (MultiPartParserError, RequestDataTooBig):
        return _refuse(400, "bad_upload", "Send the image as multipart form data.", origin)
    if file is None:
        return _refuse(400, "bad_upload", "Send the image in the field named image.", origin)
    if (file.size or 0) > limit:
        return _refuse(413, "image_too_large", f"An image can be at most {limit // 1024} KB.", origin)
    try:
        image = check_image(file.read())
        result = actions.visitor_sends_image(visitor=visitor, image=image, client_id=client_id or "", inbox=inbox)
    except ValidationError as exc:
        code = getattr(exc, "code", None) or "invalid"
        return _refuse(413 if code == "image_too_large" else 400, code, "; ".join(exc.messages), origin)
    return _cors(JsonResponse({"message_id": result.message.pk, "client_id": client_id}, status=201), origin)


@csrf_exempt
@require_http_methods(["GET", "OPTIONS"])
def visitor_file(request: HttpRequest, token: str, name: str) -> HttpResponseBase:
    """An uploaded image, for a visitor whose patient's threads hold it (X-Visitor-Token). A browser sends no
    Origin on a same-origin GET, so a missing Origin is accepted; a foreign one is not."""
    inbox = selectors.webchat_inbox(token)
    if inbox is None:
        raise Http404("no such chat")
    origin = _origin(request)
    if origin and not _allowed(inbox, origin):
        return _refuse(403, "origin_refused", "This site may not use this chat.")
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), origin)
    visitor = _visitor(request, inbox)
    if visitor is None:
        return _refuse(403, "unknown_visitor", "Start a new chat.", origin)
    upload = selectors.upload_for_visitor(visitor=visitor, name=name)
    if upload is None:
        return _refuse(404, "not_found", "No such image.", origin)
    return _cors(_file_response(upload), origin)


@login_required
@require_http_methods(["GET"])
def staff_file(request: HttpRequest, name: str) -> HttpResponseBase:
    """An uploaded image, for staff who may see its conversation; anyone else gets 404."""
    upload = selectors.upload_for_staff(user=request.user, name=name)
    if upload is None:
        raise Http404("no such image")
    response = _file_response(upload)
    # A patient's photo is patient data like their messages: audited once the file is known to be served.
    conversation = upload.message.conversation
    audit_read(
        request,
        action=AuditAction.VIEW_ATTACHMENT,
        patient_id=conversation.patient_id,
        object_type="web_upload",
        object_id=upload.pk,
        detail={"conversation_id": conversation.pk, "message_id": upload.message_id},
    )
    return response
