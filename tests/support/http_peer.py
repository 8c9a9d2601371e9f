"""A scripted DICOMweb origin server on 127.0.0.1 for failure tests: it answers each STOW-RS request with the
next scripted answer (status, headers, DICOM JSON body built from the posted instances) and records what it
received. Real HTTP over a real socket; the DICOMweb client under test does not know it is scripted."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.agentproc import free_port

# (posted SOP Instance UIDs) -> (HTTP status, headers, body as DICOM JSON or None)
Answer = Callable[[list[str]], tuple[int, dict[str, str], dict[str, Any] | None]]


def failed(uids: list[str], reason: int) -> dict[str, Any]:
    return {
        "00081198": {
            "vr": "SQ",
            "Value": [
                {"00081155": {"vr": "UI", "Value": [u]}, "00081197": {"vr": "US", "Value": [reason]}}
                for u in uids
            ],
        }
    }


def stored(uids: list[str]) -> dict[str, Any]:
    return {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [u]}} for u in uids]}}


@dataclass
class HttpPeer:
    answers: list[Answer] = field(default_factory=list)
    received: list[list[str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    # When set, sent as the body of the next answer instead of its DICOM JSON (then cleared).
    raw_body: bytes | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self) -> HttpPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import io

                import pydicom

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else self._chunked()
                boundary = self.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
                uids = []
                for part in body.split(b"--" + boundary)[1:-1]:
                    data = part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
                    uids.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
                peer.received.append(uids)
                peer.headers.append(dict(self.headers))
                status, headers, answer = peer.answers.pop(0)(uids)
                payload = json.dumps(answer).encode() if answer is not None else b""
                if peer.raw_body is not None:
                    payload, peer.raw_body = peer.raw_body, None
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if answer is not None and "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

        self.port = self.port or free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
