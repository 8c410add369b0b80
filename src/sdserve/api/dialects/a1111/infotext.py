"""A1111 "infotext": reading it back out of an image (PNG text chunk ``parameters``, or the
EXIF UserComment of JPEG/WebP) and parsing it into fields, as ``/sdapi/v1/png-info`` does."""

from __future__ import annotations

import io
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from sdserve.errors import BadInput

__all__ = ["read_image_info", "parse_infotext"]

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# A1111's re_param: `Key: value` pairs separated by commas; quoted values may hold commas.
_PARAM = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _user_comment(raw: Any) -> str | None:
    if not isinstance(raw, bytes):
        return str(raw) if raw else None
    if raw.startswith(b"UNICODE\0"):
        body = raw[8:]
        # A1111 and sdserve write UTF-16 big-endian; some tools write little-endian.
        enc = "utf-16-le" if len(body) > 1 and body[0] != 0 and body[1] == 0 else "utf-16-be"
        return body.decode(enc, errors="replace")
    if raw.startswith(b"ASCII\0\0\0"):
        return raw[8:].decode("ascii", errors="replace")
    return raw.decode("utf-8", errors="replace")


def read_image_info(data: bytes, field: str = "image") -> tuple[str | None, dict[str, Any]]:
    """(infotext or None, every other text item) of an encoded image; BadInput if undecodable."""
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadInput(field, "is not a decodable image (expected PNG, JPEG or WebP)") from None
    items: dict[str, Any] = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}
    text = items.pop("parameters", None)
    if text is None:
        comment = img.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
        text = _user_comment(comment)
    return text, items


def parse_infotext(text: str) -> dict[str, Any]:
    """The fields of an infotext: ``Prompt``, ``Negative prompt``, then each ``Key: value`` of
    the last line, with ``Size`` also split into ``Size-1``/``Size-2`` as A1111 does."""
    lines = text.strip().split("\n")
    last = lines[-1] if len(_PARAM.findall(lines[-1])) >= 3 else ""
    if last:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if len(value) > 1 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        out[key.strip()] = value
        m = re.fullmatch(r"(\d+)x(\d+)", value)
        if m:
            out[f"{key.strip()}-1"], out[f"{key.strip()}-2"] = m.group(1), m.group(2)
    return out
