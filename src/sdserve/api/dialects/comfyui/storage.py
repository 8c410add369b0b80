"""ComfyUI's files: uploads (``/upload/image``, ``/upload/mask``), the names of outputs, and
``/view``. Folders are ComfyUI's three types (``input``, ``temp``, ``output``); a file is a
name in ``service.named_files`` pointing at bytes in the artifact store (an upload) or at a
job's output, per owner. Names are checked here and then only looked up, so nothing a caller
sends reaches a filesystem path.
"""

from __future__ import annotations

import io
import json
import posixpath
import secrets
from dataclasses import dataclass

from PIL import Image

from sdserve.errors import BadInput, NotFound
from sdserve.images import decode_image, sniff_content_type
from sdserve.service.artifacts import ArtifactStore
from sdserve.service.db import Database
from sdserve.service.named_files import NamedFiles

__all__ = ["FOLDERS", "DIALECT_NAME", "ComfyFiles", "clean_subfolder", "clean_filename", "split_prefix",
           "annotated", "view_bytes"]

DIALECT_NAME = "comfyui"
FOLDERS = ("input", "temp", "output")
_MAX_NAME = 200


def clean_subfolder(text: str, field: str = "subfolder") -> str:
    """A subfolder as ComfyUI writes them ("", "a/b"), or BadInput: nothing absolute, no
    "..", no backslashes or control characters."""
    if any(ch in text for ch in "\\\x00") or any(ord(ch) < 32 for ch in text):
        raise BadInput(field, "may not contain backslashes or control characters")
    if text.startswith("/"):
        raise BadInput(field, "must be relative (no leading '/')")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(field, "may not contain '..'")
    out = "/".join(parts)
    if len(out) > _MAX_NAME:
        raise BadInput(field, f"is longer than {_MAX_NAME} characters")
    return out


def clean_filename(text: str, field: str = "filename") -> str:
    if not text or text in (".", ".."):
        raise BadInput(field, "is required (a file name)")
    if any(ch in text for ch in "/\\\x00") or any(ord(ch) < 32 for ch in text):
        raise BadInput(field, "must be a file name (no '/', '\\' or control characters)")
    if len(text) > _MAX_NAME:
        raise BadInput(field, f"is longer than {_MAX_NAME} characters")
    return text


def annotated(filename: str) -> tuple[str, str | None]:
    """ComfyUI's annotated names: ``"x.png [output]"`` names the folder in the file name."""
    for folder in FOLDERS:
        tag = f" [{folder}]"
        if filename.endswith(tag):
            return filename[: -len(tag)], folder
    return filename, None


def split_prefix(prefix: str, field: str = "filename_prefix") -> tuple[str, str]:
    """SaveImage's ``filename_prefix`` ("ComfyUI", "portraits/me") as (subfolder, prefix)."""
    sub, _, name = prefix.rpartition("/")
    return clean_subfolder(sub, field), clean_filename(name or "ComfyUI", field)


@dataclass
class ComfyFiles:
    """Uploads and names over one database and artifact store."""

    db: Database
    artifacts: ArtifactStore
    max_pixels: int

    @property
    def names(self) -> NamedFiles:
        return NamedFiles(self.db, DIALECT_NAME)

    def read(self, owner: str | None, folder: str, subfolder: str, name: str) -> bytes:
        """A file's bytes; NotFound when there is no such name (or its output expired)."""
        f = self.names.get(owner, folder, subfolder, name)
        key = None if f is None else f.key if f.key is not None else self.names.output_key(f)
        if key is None:
            where = f"{subfolder}/{name}" if subfolder else name
            raise NotFound(f"no file {where!r} in {folder}")
        return self.artifacts.get(key)

    def listing(self, owner: str | None, folder: str) -> list[str]:
        """Every name in ``folder``, as LoadImage takes them ("sub/name.png")."""
        return [f"{sub}/{name}" if sub else name for sub, name in self.names.listing(owner, folder)]

    def exists(self, owner: str | None, folder: str, subfolder: str, name: str) -> bool:
        return self.names.get(owner, folder, subfolder, name) is not None

    def upload(self, owner: str | None, folder: str, subfolder: str, filename: str, data: bytes,
               overwrite: bool) -> str:
        """Store an uploaded image under ``filename`` (``"name (1).png"`` and so on when that
        name holds other bytes and ``overwrite`` is off; the same bytes again keep the name)."""
        decode_image(data, "image", self.max_pixels, mode="RGBA")  # an image, or 400 naming the field
        stem, ext = posixpath.splitext(filename)
        name, i = filename, 1
        while not overwrite and self.exists(owner, folder, subfolder, name):
            try:
                if self.read(owner, folder, subfolder, name) == data:
                    return name
            except NotFound:
                break  # a name whose output expired: take it over
            name, i = f"{stem} ({i}){ext}", i + 1
        key = f"comfyui/files/{secrets.token_urlsafe(16)}"
        self.artifacts.put(key, data, sniff_content_type(data))
        self.names.put_upload(owner, folder, subfolder, name, key)
        return name

    def masked(self, owner: str | None, original_ref: str, mask: bytes) -> bytes:
        """``/upload/mask``: the referenced image with the mask's alpha channel as its own."""
        try:
            ref = json.loads(original_ref)
            assert isinstance(ref, dict) and isinstance(ref.get("filename"), str)
        except (ValueError, AssertionError):
            raise BadInput("original_ref", "must be JSON {\"filename\", \"subfolder\", \"type\"}") from None
        filename, folder = annotated(ref["filename"])
        folder = folder or ref.get("type") or "output"
        if folder not in FOLDERS:
            raise BadInput("original_ref.type", f"{folder!r} is not one of {', '.join(FOLDERS)}")
        sub = ref.get("subfolder") or ""
        if not isinstance(sub, str):
            raise BadInput("original_ref.subfolder", "must be a string")
        name, sub = clean_filename(filename, "original_ref.filename"), clean_subfolder(sub, "original_ref.subfolder")
        original = decode_image(self.read(owner, folder, sub, name), "original_ref", self.max_pixels, mode="RGBA")
        alpha = decode_image(mask, "image", self.max_pixels, mode="RGBA").getchannel("A")
        if alpha.size != original.size:
            alpha = alpha.resize(original.size)
        original.putalpha(alpha)
        buf = io.BytesIO()
        original.save(buf, format="PNG", compress_level=4)
        return buf.getvalue()


def view_bytes(data: bytes, channel: str | None, preview: str | None) -> tuple[bytes, str]:
    """``/view``'s conversions: ``preview=webp;90`` or ``jpeg;90`` re-encodes, ``channel=rgb``
    drops alpha, ``channel=a`` keeps only alpha; otherwise the stored bytes as they are."""
    if channel not in (None, "rgba", "rgb", "a"):
        raise BadInput("channel", f"{channel!r} is not one of rgba, rgb, a")
    if preview is None and channel in (None, "rgba"):
        return data, sniff_content_type(data)
    with Image.open(io.BytesIO(data)) as src:
        img = src.copy()
    buf = io.BytesIO()
    if preview is not None:
        fmt, _, quality = preview.partition(";")
        fmt = fmt if fmt in ("webp", "jpeg") and "a" not in (channel or "") else "webp"
        q = int(quality) if quality.isdigit() and 1 <= int(quality) <= 100 else 90
        if fmt == "jpeg" or channel == "rgb":
            img = img.convert("RGB")
        img.save(buf, format=fmt.upper(), quality=q)
        return buf.getvalue(), f"image/{fmt}"
    if channel == "rgb":
        img.convert("RGB").save(buf, format="PNG")
    else:  # "a": the alpha channel (opaque when there is none) on a transparent image
        alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
        out = Image.new("RGBA", img.size)
        out.putalpha(alpha)
        out.save(buf, format="PNG")
    return buf.getvalue(), "image/png"
