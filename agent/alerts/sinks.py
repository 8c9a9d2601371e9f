"""Alert sinks: one small class per kind of destination behind the ``Sink`` interface, found by a registry.

Adding a sink is one new class: subclass ``Sink``, set ``kind`` (the ``alerts.sinks.<name>.type`` value) and
an ``Options`` pydantic model, implement ``deliver``. ``deliver`` raises ``DeliveryError`` when the message
did not arrive; the delivery loop then retries with back-off. Sinks never touch the database.

Sinks shipped:

``webhook``: an HTTP(S) JSON POST. Options: ``url``, ``secret`` (shared HMAC key), ``timeout_s`` (10),
``include_patient`` (true: the body carries the patient ID and issuer so that the receiver can match its
worklist). Headers::

    Content-Type: application/json
    X-LiverAgent-Delivery: <delivery id>           (same on every retry: an idempotency key)
    X-LiverAgent-Timestamp: <unix seconds>
    X-LiverAgent-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

Body (``schema`` "liver-agent.alert/1")::

    {"schema": "liver-agent.alert/1", "event": "alert.raised", "delivery_id": 12, "sent_at": "...Z",
     "alert": {"id": 3, "revision": 1, "code": "DISC_RECIST_PD_CHOI_PR", "severity": "critical",
               "state": "open", "source": "assessment", "timepoint": 2, "subject": null,
               "message": "...", "citation": "...", "created_at": "...Z"},
     "study": {"study_uid": "1.2...", "accession_number": "A123", "study_date": "2024-03-01"} | null,
     "patient": {"id": "P1", "issuer": ""} | null,
     "responses": [{"criterion": "recist", "label": "RECIST 1.1", "category": "PD"}, ...]}

Any 2xx answer is success; anything else, a timeout or a connection error is retried.

``hl7``: an HL7 v2.5 ORU^R01 over MLLP. Options: ``host``, ``port``, ``timeout_s`` (10, per connection and
per answer), ``sending_application`` ("LIVERAGENT"), ``sending_facility``, ``receiving_application``,
``receiving_facility``, ``processing_id`` ("P"). Segments: MSH, PID (patient ID^^^issuer, name), OBR
(OBR-3 filler order number and OBR-18 = accession number, OBR-19 = Study Instance UID, OBR-25 result status
F), one OBX per criterion with its response (CWE, abnormal flag N), one OBX with the alert text (TX; OBX-8
abnormal flag by severity: critical AA, warning A, info N), and ZDS with the Study Instance UID (IHE). The
sink waits for the ACK: MSA-1 AA/CA is success; AE/AR/CE/CR, no answer within ``timeout_s`` or a broken
connection are retried. MSH-10 (message control ID) is the delivery id, the same on every retry.

``log``: a structured ``alert.raised`` event (code, severity, hashed study UID); the patient reference and the
message text only at DEBUG.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import hl7
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent.log import get_logger, uid_hash
from agent.sr.values import iso_da

log = get_logger(__name__)

WEBHOOK_SCHEMA = "liver-agent.alert/1"
SIGNATURE_HEADER = "X-LiverAgent-Signature"
TIMESTAMP_HEADER = "X-LiverAgent-Timestamp"
DELIVERY_HEADER = "X-LiverAgent-Delivery"

MLLP_START = b"\x0b"
MLLP_END = b"\x1c\x0d"


class DeliveryError(Exception):
    """The message did not arrive (or was refused); ``str(exc)`` says why without patient data."""


class SinkConfigError(ValueError):
    """A sink's options are invalid; the message names ``alerts.sinks.<name>.<field>``."""


@dataclass(frozen=True)
class CriterionResponse:
    criterion: str  # Assessment JSON key: recist, irecist, choi, ...
    label: str  # RECIST 1.1, iRECIST, ...
    category: str | None


@dataclass(frozen=True)
class AlertMessage:
    """Everything a sink may send about one revision of one alert (built by the delivery loop)."""

    delivery_id: int
    alert_id: int
    revision: int
    code: str
    severity: str
    state: str
    source: str
    message: str
    citation: str
    timepoint: int | None
    subject: str | None
    created_at: datetime
    study_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None  # YYYYMMDD
    patient_id: str | None = None
    issuer: str | None = None
    patient_name: str | None = None
    responses: tuple[CriterionResponse, ...] = field(default=())


class SinkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sink(ABC):
    """One configured destination. Subclasses set ``kind`` and ``Options`` and are registered by kind."""

    kind: ClassVar[str]
    Options: ClassVar[type[SinkOptions]] = SinkOptions
    registry: ClassVar[dict[str, type[Sink]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Sink.registry[cls.kind] = cls

    def __init__(self, name: str, options: SinkOptions) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    def deliver(self, message: AlertMessage) -> None:
        """Send ``message``; raise ``DeliveryError`` unless the destination took it."""


def build_sink(name: str, type_: str, options: Mapping[str, Any]) -> Sink:
    cls = Sink.registry.get(type_)
    if cls is None:
        known = ", ".join(sorted(Sink.registry))
        raise SinkConfigError(f"alerts.sinks.{name}.type: unknown sink type {type_!r} (one of {known})")
    try:
        parsed = cls.Options(**dict(options))
    except ValidationError as exc:
        where = "; ".join(
            f"alerts.sinks.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SinkConfigError(where) from None
    return cls(name, parsed)


def build_sinks(sinks: Mapping[str, Any]) -> dict[str, Sink]:
    """``alerts.sinks`` settings -> configured sinks by name (raises ``SinkConfigError``)."""
    out = {}
    for name, s in sinks.items():
        extra = dict(s.model_extra or {})
        out[name] = build_sink(name, s.type, extra)
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _date_iso(da: str | None) -> str | None:
    return iso_da(da) or da or None


# --------------------------------------------------------------------------------------------------------
# Webhook


class WebhookOptions(SinkOptions):
    url: str
    secret: SecretStr
    timeout_s: float = Field(10, gt=0)
    include_patient: bool = True

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


def webhook_body(message: AlertMessage, include_patient: bool, sent_at: datetime) -> dict[str, Any]:
    return {
        "schema": WEBHOOK_SCHEMA,
        "event": "alert.raised",
        "delivery_id": message.delivery_id,
        "sent_at": _iso(sent_at),
        "alert": {
            "id": message.alert_id,
            "revision": message.revision,
            "code": message.code,
            "severity": message.severity,
            "state": message.state,
            "source": message.source,
            "timepoint": message.timepoint,
            "subject": message.subject,
            "message": message.message,
            "citation": message.citation,
            "created_at": _iso(message.created_at),
        },
        "study": None
        if message.study_uid is None
        else {
            "study_uid": message.study_uid,
            "accession_number": message.accession_number,
            "study_date": _date_iso(message.study_date),
        },
        "patient": {"id": message.patient_id, "issuer": message.issuer or ""}
        if include_patient and message.patient_id
        else None,
        "responses": [
            {"criterion": r.criterion, "label": r.label, "category": r.category} for r in message.responses
        ],
    }


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-LiverAgent-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>." + body``."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink(Sink):
    kind = "webhook"
    Options = WebhookOptions

    def deliver(self, message: AlertMessage) -> None:
        opts = self.options
        assert isinstance(opts, WebhookOptions)
        now = datetime.now(UTC)
        body = json.dumps(
            webhook_body(message, opts.include_patient, now), separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        timestamp = str(int(now.timestamp()))
        request = urllib.request.Request(
            opts.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "liver-agent",
                DELIVERY_HEADER: str(message.delivery_id),
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(opts.secret.get_secret_value().encode("utf-8"), timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=opts.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{type(exc).__name__}: {reason}"[:200]) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")


# --------------------------------------------------------------------------------------------------------
# HL7 v2 ORU^R01 over MLLP


class HL7Options(SinkOptions):
    host: str
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(10, gt=0)
    sending_application: str = "LIVERAGENT"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"


ABNORMAL_FLAG = {"critical": "AA", "warning": "A", "info": "N"}
ACK_OK = {"AA", "CA"}

_ESCAPER = hl7.parse("MSH|^~\\&|X")


def _esc(value: object) -> str:
    """HL7 escaping of a field value (separators become \\F\\, \\S\\, ...); newlines become ~-free spaces."""
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    return str(_ESCAPER.escape(text))


def oru_r01(message: AlertMessage, opts: HL7Options, now: datetime) -> str:
    """The ORU^R01 message of ``message`` (segments joined by CR)."""
    ts = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    control_id = f"LA{message.delivery_id}"
    pid_name = ""
    if message.patient_name:
        pid_name = "^".join(_esc(p) for p in message.patient_name.split("^")[:5])
    accession = _esc(message.accession_number or "")
    study_uid = _esc(message.study_uid or "")
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                _esc(opts.sending_application),
                _esc(opts.sending_facility),
                _esc(opts.receiving_application),
                _esc(opts.receiving_facility),
                ts,
                "",
                "ORU^R01^ORU_R01",
                control_id,
                _esc(opts.processing_id),
                "2.5",
            ]
        ),
        "|".join(
            [
                "PID",
                "1",
                "",
                f"{_esc(message.patient_id or '')}^^^{_esc(message.issuer or '')}",
                "",
                pid_name,
            ]
        ),
        "|".join(
            [
                "OBR",
                "1",
                "",
                f"{accession}^{_esc(opts.sending_application)}",
                "LIVER-RESPONSE^Liver tumour response assessment^L",
                "",
                "",
                _esc(message.study_date or ""),
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                accession,
                study_uid,
                "",
                "",
                ts,
                "",
                "",
                "F",
            ]
        ),
    ]
    set_id = 0
    for r in message.responses:
        set_id += 1
        category = _esc(r.category or "")
        segments.append(
            "|".join(
                [
                    "OBX",
                    str(set_id),
                    "CWE",
                    f"{_esc(r.criterion.upper())}^{_esc(r.label)} response^L",
                    "",
                    f"{category}^{category}^L" if category else "",
                    "",
                    "",
                    "N",
                    "",
                    "",
                    "F",
                ]
            )
        )
    set_id += 1
    text = message.message if not message.citation else f"{message.message} ({message.citation})"
    segments.append(
        "|".join(
            [
                "OBX",
                str(set_id),
                "TX",
                f"{_esc(message.code)}^{_esc(message.severity.capitalize())} alert^L",
                str(message.timepoint if message.timepoint is not None else ""),
                _esc(text),
                "",
                "",
                ABNORMAL_FLAG.get(message.severity, "N"),
                "",
                "",
                "F",
            ]
        )
    )
    if message.study_uid:
        segments.append(f"ZDS|{study_uid}^{_esc(opts.sending_application)}^Application^DICOM")
    return "\r".join(segments)


def mllp_exchange(host: str, port: int, payload: bytes, timeout_s: float) -> bytes:
    """Send one MLLP frame and return the payload of the answer frame (``DeliveryError`` otherwise)."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(MLLP_START + payload + MLLP_END)
            buf = b""
            while MLLP_END not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryError("no ACK within the timeout")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise DeliveryError("connection closed before the ACK")
                buf += chunk
    except TimeoutError:
        raise DeliveryError("no ACK within the timeout") from None
    except OSError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc.strerror or exc}"[:200]) from None
    start = buf.find(MLLP_START)
    return buf[start + 1 : buf.index(MLLP_END)]


class HL7Sink(Sink):
    kind = "hl7"
    Options = HL7Options

    def deliver(self, message: AlertMessage) -> None:
        opts = self.options
        assert isinstance(opts, HL7Options)
        text = oru_r01(message, opts, datetime.now(UTC))
        answer = mllp_exchange(opts.host, opts.port, text.encode("utf-8"), opts.timeout_s)
        try:
            ack = hl7.parse(answer.decode("utf-8", "replace"))
            code = str(ack.segment("MSA")[1]).strip()
        except Exception:
            raise DeliveryError("the answer is not an HL7 ACK") from None
        if code not in ACK_OK:
            raise DeliveryError(f"ACK {code or '(empty)'}")


# --------------------------------------------------------------------------------------------------------
# Log


class LogSink(Sink):
    kind = "log"

    def deliver(self, message: AlertMessage) -> None:
        log.info(
            "alert.raised",
            alert=message.alert_id,
            revision=message.revision,
            code=message.code,
            severity=message.severity,
            source=message.source,
            study=uid_hash(message.study_uid) if message.study_uid else None,
            timepoint=message.timepoint,
            subject=message.subject,
        )
        log.debug(
            "alert.raised.detail",
            alert=message.alert_id,
            patient_id=message.patient_id,
            accession_number=message.accession_number,
            text=message.message,
        )
