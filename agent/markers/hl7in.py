"""Tumour marker results received as HL7 v2 ORU^R01 over MLLP (``markers.hl7`` in the configuration).

One message at a time on each connection: the agent reads the MLLP frame (at most ``max_message_bytes``,
within ``read_timeout_s`` from its first byte and ``idle_timeout_s`` between messages), checks it, stores
the usable results and answers:

* ``AA`` only after the results are committed to the database;
* ``AR`` (rejected, nothing stored) when the message is not an ORU^R01, the sending application (MSH-3) is
  not in ``allowed_applications``, the frame is too large or the message cannot be parsed;
* ``AE`` (nothing stored) when the message holds no tumour marker result the agent can use, or a marker
  result lacks a patient ID, a numeric value, a unit or a date; MSA-3 and ERR-8 say why.

A message is stored whole or not at all. OBX-3 is mapped to a marker by its LOINC code (coding system
``LN``) or by a local code of ``local_codes``; other OBX segments (other tests of a panel) are ignored.
OBX-11 must be F (final) or C (corrected); a preliminary (P) or cancelled result is not used. The sample
date is OBX-14, else OBR-7; the reference range is OBX-7 (``0-5``, ``<5``, ``<=5``). The patient is PID-3:
the identifier of type MR, else the first, with its assigning authority's namespace as the issuer. No
patient data is logged above DEBUG.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import hl7
from sqlalchemy.orm import Session, sessionmaker

from agent.log import get_logger
from agent.markers.store import PatientMarker, save
from agent.response.model import Marker, MarkerResult

log = get_logger(__name__)

MLLP_START = b"\x0b"
MLLP_END = b"\x1c\x0d"

#: LOINC codes of the markers (serum or plasma).
LOINC: dict[str, Marker] = {
    "2039-6": Marker.CEA,  # Carcinoembryonic Ag [Mass/volume] in Serum or Plasma
    "24108-3": Marker.CA19_9,  # Cancer Ag 19-9 [Units/volume] in Serum or Plasma
    "6875-9": Marker.CA15_3,  # Cancer Ag 15-3 [Units/volume] in Serum or Plasma
    "10334-1": Marker.CA125,  # Cancer Ag 125 [Units/volume] in Serum or Plasma
    "1834-1": Marker.AFP,  # Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma
    "9811-1": Marker.CHROMOGRANIN_A,  # Chromogranin A [Mass/volume] in Serum or Plasma
}
USABLE_STATUS = {"F", "C", ""}
#: ERR-3 (HL7 table 0357) by ACK code.
ERR_CODES = {"AE": "207^Application internal error^HL70357", "AR": "200^Unsupported message type^HL70357"}


class Refused(Exception):
    """The message cannot be used; ``code`` is the ACK code (AE or AR) and ``str(exc)`` the reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Parsed:
    control_id: str
    sending_application: str
    results: tuple[PatientMarker, ...]


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _field(segment: Any, n: int) -> str:
    try:
        return _str(segment[n])
    except (IndexError, KeyError):
        return ""


def _component(segment: Any, n: int, c: int) -> str:
    """Component ``c`` (1-based) of the first repetition of field ``n``; a plain field is its component 1."""
    try:
        value = segment[n]
    except (IndexError, KeyError):
        return ""
    if isinstance(value, str):
        return value.strip() if c == 1 else ""
    try:
        rep = value[0]  # the first repetition (or, for a single value, the value itself)
        if isinstance(rep, str):
            return rep.strip() if c == 1 and len(value) == 1 else _str(value[c - 1]) if len(value) > 1 else ""
        comp = rep[c - 1]
    except (IndexError, KeyError, TypeError):
        return ""
    return comp.strip() if isinstance(comp, str) else _str(comp)


def _patient(pid: Any) -> tuple[str, str]:
    """PID-3: the repetition whose identifier type (CX.5) is MR, else the first; (ID, assigning authority's
    namespace ID)."""
    try:
        field = pid[3]
    except (IndexError, KeyError):
        return "", ""
    chosen: list[str] | None = None
    for rep in field:
        parts = [rep] if isinstance(rep, str) else [_str(c) for c in rep]
        if chosen is None or (len(parts) > 4 and parts[4].upper() == "MR"):
            chosen = parts
            if len(parts) > 4 and parts[4].upper() == "MR":
                break
    if not chosen:
        return "", ""
    issuer = chosen[3].split("&")[0] if len(chosen) > 3 else ""
    return chosen[0].strip(), issuer.strip()


def _hl7_date(text: str) -> date | None:
    digits = text[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        return None


def _range(text: str) -> tuple[Decimal | None, Decimal | None]:
    """OBX-7 ``0-5`` / ``0 - 5`` / ``<5`` / ``<=5`` / ``5`` -> (lower, upper); unreadable -> (None, None)."""
    t = text.replace(" ", "")
    try:
        if t.startswith(("<=", "<")):
            return None, Decimal(t.lstrip("<="))
        if "-" in t[1:]:
            cut = t.index("-", 1)
            return Decimal(t[:cut]), Decimal(t[cut + 1 :])
    except InvalidOperation:
        return None, None
    return None, None


def _ack(message: Any | None, code: str, control_id: str, reason: str = "") -> bytes:
    """An ACK for ``message`` (MSH-3/4 and MSH-5/6 swapped), with MSA-3 and ERR-8 carrying the reason."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    sender = receiver = facility_s = facility_r = ""
    version = "2.5"
    if message is not None:
        msh = message.segment("MSH")
        sender, facility_s = _field(msh, 3), _field(msh, 4)
        receiver, facility_r = _field(msh, 5), _field(msh, 6)
        version = _field(msh, 12) or version
    text = _esc(reason)
    segments = [
        f"MSH|^~\\&|{_esc(receiver) or 'LIVERAGENT'}|{_esc(facility_r)}|{_esc(sender)}|{_esc(facility_s)}"
        f"|{now}||ACK^R01^ACK|ACK{_esc(control_id)[:16]}{now}|P|{_esc(version)}",
        f"MSA|{code}|{_esc(control_id)}|{text[:80]}",
    ]
    if code != "AA":
        hl7_code = (
            "207^Application internal error^HL70357"
            if code == "AE"
            else "200^Unsupported message type^HL70357"
        )
        segments.append(f"ERR|||{hl7_code}|E||||{text}")
    return ("\r".join(segments) + "\r").encode("utf-8")


_ESCAPER = hl7.parse("MSH|^~\\&|X")


def _esc(value: object) -> str:
    return str(_ESCAPER.escape(" ".join(_str(value).split())))


def parse_oru(text: str, allowed: Sequence[str], local_codes: Mapping[str, Marker]) -> tuple[Any, Parsed]:
    """Check an ORU^R01 and extract its marker results; raises ``Refused`` (with the parsed message or
    ``None`` as its ``message`` attribute for the ACK header)."""
    try:
        message = hl7.parse(text)
        msh = message.segment("MSH")
    except Exception:
        raise Refused("AR", "the message cannot be parsed as HL7 v2") from None
    control_id = _field(msh, 10)
    try:
        return message, _extract(message, msh, control_id, allowed, local_codes)
    except Refused as exc:
        exc.message = message  # type: ignore[attr-defined]
        exc.control_id = control_id  # type: ignore[attr-defined]
        raise


def _extract(
    message: Any, msh: Any, control_id: str, allowed: Sequence[str], local_codes: Mapping[str, Marker]
) -> Parsed:
    kind = f"{_component(msh, 9, 1)}^{_component(msh, 9, 2)}"
    if kind != "ORU^R01":
        raise Refused("AR", f"message type {kind} is not accepted (ORU^R01 only)")
    application = _component(msh, 3, 1)
    if application not in allowed:
        raise Refused("AR", f"sending application {application or '(empty)'} is not allowed")
    try:
        pid = message.segment("PID")
    except KeyError:
        raise Refused("AE", "no PID segment") from None
    patient_id, issuer = _patient(pid)
    if not patient_id or len(patient_id) > 64:
        raise Refused("AE", "PID-3 holds no patient ID of 1 to 64 characters")
    try:
        obr_date = _field(message.segments("OBR")[0], 7)
    except (KeyError, IndexError):
        obr_date = ""
    out: list[PatientMarker] = []
    problems: list[str] = []
    try:
        obxs = message.segments("OBX")
    except KeyError:
        obxs = []
    for obx in obxs:
        code, system = _component(obx, 3, 1), _component(obx, 3, 3).upper()
        marker = LOINC.get(code) if system in ("LN", "LOINC") else None
        marker = marker or local_codes.get(code)
        if marker is None:
            continue
        where = f"OBX {_field(obx, 1) or '?'} ({marker.value})"
        status = _field(obx, 11).upper()
        if status not in USABLE_STATUS:
            problems.append(f"{where}: result status {status} is not final")
            continue
        try:
            value = Decimal(_field(obx, 5))
            if not value.is_finite() or value < 0:
                raise InvalidOperation
        except InvalidOperation:
            problems.append(f"{where}: the value is not a number >= 0")
            continue
        unit = _component(obx, 6, 1)
        if not unit:
            problems.append(f"{where}: no unit (OBX-6)")
            continue
        day = _hl7_date(_field(obx, 14)) or _hl7_date(obr_date)
        if day is None:
            problems.append(f"{where}: no sample date (OBX-14 or OBR-7)")
            continue
        low, high = _range(_field(obx, 7))
        result = MarkerResult(marker, day, value, unit[:32], low, high)
        out.append(
            PatientMarker(patient_id, issuer[:64], result, "hl7", f"{control_id[:100]}:{_field(obx, 1)}")
        )
    if problems:
        raise Refused("AE", "; ".join(problems))
    if not out:
        raise Refused("AE", "no tumour marker result in the message (LOINC or a configured local code)")
    return Parsed(control_id, application, tuple(out))


class MarkerReceiver:
    """Answers one HL7 message: parse, store and commit, then the ACK bytes."""

    def __init__(
        self, sessions: sessionmaker[Session], allowed: Sequence[str], local_codes: Mapping[str, Marker]
    ) -> None:
        self.sessions = sessions
        self.allowed = tuple(allowed)
        self.local_codes = dict(local_codes)

    def handle(self, payload: bytes) -> bytes:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = payload.decode("latin-1")
        message: Any | None = None
        control_id = ""
        try:
            message, parsed = parse_oru(text, self.allowed, self.local_codes)
            control_id = parsed.control_id
            with self.sessions() as session:
                n = save(session, parsed.results)
                session.commit()
        except Refused as exc:
            message = getattr(exc, "message", message)
            control_id = getattr(exc, "control_id", control_id)
            log.warning("markers.hl7.refused", ack=exc.code, reason=str(exc)[:300])
            return _ack(message, exc.code, control_id, str(exc))
        except Exception as exc:  # the database: AE, the sender retries
            log.error("markers.hl7.store_failed", error=type(exc).__name__)
            return _ack(message, "AE", control_id, "the result could not be stored; retry later")
        log.info("markers.hl7.stored", results=n, application=parsed.sending_application)
        return _ack(message, "AA", control_id)


def read_frame(
    sock: socket.socket, max_bytes: int, first_byte_timeout: float, read_timeout: float
) -> bytes | None:
    """One MLLP frame's payload; ``None`` when the peer closed or stayed idle. Raises ``Refused`` (AR) when
    the frame is too large, malformed or not complete within ``read_timeout`` of its first byte."""
    buf = bytearray()
    sock.settimeout(first_byte_timeout)
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return None
    if not chunk:
        return None
    deadline = time.monotonic() + read_timeout
    buf += chunk
    while MLLP_END not in buf:
        if len(buf) > max_bytes + 3:
            raise Refused("AR", f"the message exceeds {max_bytes} bytes")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused("AR", f"the message was not complete within {read_timeout:g} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise Refused("AR", f"the message was not complete within {read_timeout:g} s") from None
        if not chunk:
            return None
        buf += chunk
    if not buf.startswith(MLLP_START):
        raise Refused("AR", "not an MLLP frame")
    end = buf.index(MLLP_END)
    if end - 1 > max_bytes:
        raise Refused("AR", f"the message exceeds {max_bytes} bytes")
    return bytes(buf[1:end])


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class MLLPListener:
    """The MLLP server of ``serve``: at most ``max_connections`` at once (more are closed at once), each
    answered message by message until the peer closes, stays idle or sends something unusable."""

    def __init__(
        self,
        receiver: MarkerReceiver,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        read_timeout_s: float,
        idle_timeout_s: float,
        max_connections: int,
    ) -> None:
        self.receiver = receiver
        self.slots = threading.BoundedSemaphore(max_connections)
        listener = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                listener._serve(self.request)

        self._server = _Server((host, port), Handler, bind_and_activate=True)
        self.max_bytes = max_message_bytes
        self.read_timeout = read_timeout_s
        self.idle_timeout = idle_timeout_s
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _serve(self, sock: socket.socket) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("markers.hl7.busy")
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    payload = read_frame(sock, self.max_bytes, self.idle_timeout, self.read_timeout)
                except Refused as exc:
                    log.warning("markers.hl7.refused", ack=exc.code, reason=str(exc))
                    sock.sendall(MLLP_START + _ack(None, exc.code, "", str(exc)) + MLLP_END)
                    return
                if payload is None:
                    return
                sock.sendall(MLLP_START + self.receiver.handle(payload) + MLLP_END)
        except OSError as exc:
            log.info("markers.hl7.connection_lost", error=type(exc).__name__)
        finally:
            self.slots.release()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="mllp-markers", daemon=True)
        self._thread.start()
        log.info("markers.hl7.listening", port=self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
