"""Serving stored files over HTTP: content types, ETags and 304s, dataset thumbnails.

A version folder is written once and renamed into place (models/registry.py), and a dataset is never
modified, so their files can be cached for good: the ETag is derived from the file's size and mtime
(or the content hash we already know) and a matching ``If-None-Match`` answers 304 without a body.
The one exception is ``manifest.json``, rewritten when a version becomes a candidate: it is served
with ``no-cache`` (revalidate every time; the ETag still saves the body).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse
from PIL import Image

from core.images import open_image, to_rgb

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Files whose browser default (render inline) is wrong or unknown: offered as downloads.
DOWNLOAD_SUFFIXES = {".onnx", ".pt", ".data", ".npz"}
TYPES = {".json": "application/json", ".png": "image/png", ".onnx": "application/octet-stream",
         ".pt": "application/octet-stream", ".npz": "application/octet-stream"}


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def file_etag(path: Path) -> str:
    st = path.stat()
    return '"' + hashlib.sha256(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, etag: str) -> bool:
    """``If-None-Match`` names this ETag (or ``*``); weak comparison, as RFC 9110 asks for GET."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def serve_file(request: Request, path: Path, cache_control: str = IMMUTABLE, etag: str | None = None) -> Response:
    etag = etag or file_etag(path)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    disposition = "attachment" if path.suffix.lower() in DOWNLOAD_SUFFIXES else "inline"
    return FileResponse(path, media_type=content_type(path.name), headers=headers,
                        filename=path.name, content_disposition_type=disposition)


def thumbnail_jpeg(path: Path, size: int, max_pixels: int) -> bytes:
    """The image shrunk to fit ``size`` x ``size`` (aspect kept, never enlarged), as JPEG."""
    img = open_image(path, max_pixels)
    if img.format == "JPEG":
        img.draft("RGB", (size, size))  # decode at 1/2..1/8 scale: most of the work saved for big photos
    rgb = to_rgb(img)
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=85)
    return out.getvalue()
