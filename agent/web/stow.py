"""STOW-RS into the agent: ``POST /dicomweb/studies`` with ``multipart/related; type="application/dicom"``.

An AI platform, a viewer or a cloud router pushes studies and measurement SRs to the agent over HTTP, with
the same durability contract as C-STORE: an instance is reported stored only once it is on disk (fsync) and
indexed, through the listener's own path (``agent.dicom.scp.StoreSCP.store_file``), and the same refusals
come back as the STOW-RS FailureReason of that instance alone (0xA700 out of resources, 0xA900 data set does
not match, 0xC000 cannot understand, 0x0122 storage class not accepted, 0xC122 transfer syntax not accepted).

Memory stays bounded whatever the request: the body is written to the spool's ``.incoming/`` as it arrives
(at most ``web.stow_max_request_mb``, else 413), then mapped and split into its parts in place; each part is
filed from the map. The answer (PS3.18 §10.5.3) is DICOM JSON with ``ReferencedSOPSequence`` and
``FailedSOPSequence``: HTTP 200 when every instance is stored, 202 when some are, 409 when none is; 400 for
a body that is not multipart, 415 for another media type. Nothing here logs patient data.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from agent.dicom.header import HeaderError, read_file_meta
from agent.dicom.spool import Spool, SpoolError
from agent.log import get_logger

log = get_logger(__name__)

MEDIA_TYPE = "application/dicom+json"
CANNOT_UNDERSTAND = 0xC000
# A part's headers longer than this make the body malformed.
MAX_PART_HEADERS = 8192
MAX_BOUNDARY = 200

# (Part 10 bytes, source) -> DICOM status
StoreFile = Callable[[memoryview, str], int]


class MalformedBody(ValueError):
    """The body is not a multipart/related message with the announced boundary."""


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    start: int
    end: int


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type (ValueError else)."""
    media, *params = [p.strip() for p in content_type.split(";")]
    values = {}
    for p in params:
        key, _, value = p.partition("=")
        values[key.strip().lower()] = value.strip().strip('"')
    if media.lower() != "multipart/related":
        raise ValueError("not multipart/related")
    if values.get("type", "application/dicom").lower() != "application/dicom":
        raise ValueError("type is not application/dicom")
    boundary = values.get("boundary", "")
    # RFC 2046 says at most 70 characters; some senders use more (Orthanc: two UUIDs, 73).
    if not 1 <= len(boundary) <= MAX_BOUNDARY:
        raise ValueError("no boundary" if not boundary else "boundary too long")
    return boundary.encode("ascii", "replace")


def split_parts(buf: Any, boundary: bytes) -> Iterator[Part]:
    """The parts of a multipart body (RFC 2046 §5.1.1) held in ``buf`` (bytes or a map), found in place."""
    delimiter = b"--" + boundary
    pos = buf.find(delimiter)
    if pos < 0:
        raise MalformedBody("no boundary delimiter")
    while True:
        pos += len(delimiter)
        if buf[pos : pos + 2] == b"--":  # the close delimiter
            return
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            raise MalformedBody("delimiter line not terminated")
        # Headers end at the first empty line (at once when the part has none).
        headers_end = buf.find(b"\r\n\r\n", line_end, line_end + MAX_PART_HEADERS + 4)
        if headers_end < 0:
            raise MalformedBody("part headers not terminated")
        content_type = "application/dicom"
        for line in bytes(buf[line_end + 2 : headers_end]).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                content_type = value.decode("latin-1").strip()
        start = headers_end + 4
        end = buf.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise MalformedBody("part not closed by a delimiter")
        yield Part(content_type, start, end)
        pos = end + 2


def _uid_element(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _reference(sop_class: str | None, sop_uid: str | None, reason: int | None = None) -> dict[str, Any]:
    item = {"00081150": _uid_element(sop_class), "00081155": _uid_element(sop_uid)}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


class StowService:
    """Receives STOW-RS requests into the spool and the index through the listener's ``store_file``."""

    def __init__(self, spool: Spool, store_file: StoreFile, max_request_bytes: int) -> None:
        self.spool = spool
        self.store_file = store_file
        self.max_request_bytes = max_request_bytes

    async def receive(self, request: Request, source: str) -> JSONResponse:
        try:
            boundary = boundary_of(request.headers.get("content-type", ""))
        except ValueError as exc:
            log.warning("stow.refused", reason=str(exc), source=source)
            return JSONResponse(
                {"detail": f'expected multipart/related; type="application/dicom" ({exc})'}, 415
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_request_bytes:
            log.warning("stow.refused", reason="request too large", bytes=int(declared), source=source)
            return JSONResponse({"detail": "request larger than web.stow_max_request_mb"}, 413)
        try:
            fd, path = self.spool.incoming()
        except SpoolError as exc:
            log.error("stow.spool_failed", error=str(exc))
            return JSONResponse({"detail": "cannot write to the spool"}, 503, headers={"Retry-After": "60"})
        try:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_request_bytes:
                    log.warning("stow.refused", reason="request too large", bytes=size, source=source)
                    return JSONResponse({"detail": "request larger than web.stow_max_request_mb"}, 413)
                if not self.spool.has_room(len(chunk)):
                    log.warning("stow.refused", reason="spool below its free-space floor", source=source)
                    return JSONResponse({"detail": "out of resources"}, 503, headers={"Retry-After": "60"})
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            return await run_in_threadpool(self._file_parts, fd, size, boundary, source)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()

    def _file_parts(self, fd: int, size: int, boundary: bytes, source: str) -> JSONResponse:
        if size == 0:
            return JSONResponse({"detail": "empty body"}, 400)
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as body:
            try:
                parts = list(split_parts(body, boundary))
            except MalformedBody as exc:
                log.warning("stow.refused", reason=f"malformed body: {exc}", source=source)
                return JSONResponse({"detail": f"malformed multipart body: {exc}"}, 400)
            for part in parts:
                view = memoryview(body)[part.start : part.end]
                try:
                    stored_or_failed = self._file_one(view, part, source)
                finally:
                    view.release()
                (stored if "00081197" not in stored_or_failed else failed).append(stored_or_failed)
        status = 200 if not failed else (202 if stored else 409)
        answer: dict[str, Any] = {}
        if stored:
            answer["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        log.info("stow.received", stored=len(stored), failed=len(failed), bytes=size, source=source)
        return JSONResponse(answer, status, media_type=MEDIA_TYPE)

    def _file_one(self, view: memoryview, part: Part, source: str) -> dict[str, Any]:
        sop_class = sop_uid = None
        try:
            meta = read_file_meta(view)
            sop_class, sop_uid = meta.sop_class_uid, meta.sop_instance_uid
        except HeaderError:
            pass
        if part.content_type.split(";")[0].strip().lower() != "application/dicom":
            return _reference(sop_class, sop_uid, CANNOT_UNDERSTAND)
        status = self.store_file(view, source)
        return _reference(sop_class, sop_uid, None if status == 0 else status)
