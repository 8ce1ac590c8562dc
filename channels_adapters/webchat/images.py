"""Checking an image a visitor attached: recognised by its content (never its name or declared type) and
re-encoded, so what is stored is a plain image Pillow wrote itself (no trailing HTML or script, no EXIF with
a location), or nothing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, ImageOps

# Pillow format → (content type, file extension). Nothing else is opened at all.
FORMATS = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
CONTENT_TYPES = frozenset(content_type for content_type, _ in FORMATS.values())


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def check_image(raw: bytes) -> CheckedImage:
    """The image re-encoded in its own format, or ValidationError (code not_an_image or image_too_large)."""
    if len(raw) > settings.WEBCHAT_MAX_IMAGE_BYTES:
        raise ValidationError("The image is too large.", code="image_too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=list(FORMATS)) as probe:
                probe.verify()
            image = Image.open(io.BytesIO(raw), formats=list(FORMATS))
            fmt = str(image.format)
            frames = int(getattr(image, "n_frames", 1) or 1)
            width, height = image.size
            if width * height * frames > settings.WEBCHAT_MAX_IMAGE_PIXELS:
                raise ValidationError("The image has too many pixels.", code="image_too_large")
            image.load()  # a truncated or corrupt file fails here
            data = _reencode(image, fmt, frames)
    except ValidationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, Warning):
        raise ValidationError(
            "This file is not a JPEG, PNG, WebP or GIF image, or it is damaged.", code="not_an_image"
        ) from None
    content_type, extension = FORMATS[fmt]
    return CheckedImage(data=data, content_type=content_type, extension=extension, width=width, height=height)


def _reencode(image: Image.Image, fmt: str, frames: int) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        # Turned upright by its EXIF orientation, since the EXIF itself is not kept.
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "L", "CMYK"):
            image = image.convert("RGB")
        options = {"quality": 90}
    elif fmt == "WEBP":
        options = {"quality": 90}
    if frames > 1 and fmt in ("GIF", "WEBP", "PNG"):
        options["save_all"] = True
    image.save(out, fmt, **options)
    return out.getvalue()
