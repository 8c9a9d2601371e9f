"""Alerts store, sinks and the durable delivery loop, against real local receivers.

The webhook goes to an HTTP server started here (signature checked with the shared secret); HL7 goes to an
MLLP listener started here that parses each message with the ``hl7`` library and answers AA, then AE, then
nothing, so that the delivery loop's retries are observed on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hl7
import pytest
from sqlalchemy import func, select
from support.worklist import add_result, add_study, gist_timeline, migrated_sessions, stable_crc_timeline

from agent.alerts.delivery import AlertDispatcher, backoff_s
from agent.alerts.models import AlertDelivery, AlertRecord
from agent.alerts.sinks import LogSink, Sink, SinkConfigError, build_sink, build_sinks
from agent.alerts.store import (
    DELIVERY_GAVE_UP,
    DISK_LOW,
    acknowledge,
    raise_operational,
    resolve_operational,
)
from agent.config import AlertSettings, AlertSinkSettings

SECRET = "s3cret-shared-key-0123456789"
# Later than any row the factories create during the run (they use the wall clock), so queued rows are due at
# T0 however long the suite takes to reach these tests.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


@pytest.fixture
def sessions(tmp_path: Path):
    s = migrated_sessions(tmp_path / "agent.db")
    yield s
    s.kw["bind"].dispose()


def count(sessions, model, **where) -> int:
    with sessions() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return s.execute(q).scalar_one()


def alerts(sessions) -> list[AlertRecord]:
    with sessions() as s:
        return list(s.scalars(select(AlertRecord).order_by(AlertRecord.id)))


def deliveries(sessions) -> list[AlertDelivery]:
    with sessions() as s:
        return list(s.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))


# ------------------------------------------------------------------------------------------------------
# Store


def test_discordance_alert_is_stored_once_and_rerun_updates_it(sessions) -> None:
    routing = {"hook": frozenset({"critical"}), "log": frozenset({"critical", "warning", "info"})}
    study = add_study(sessions, "1.2.826.0.1.1")
    add_result(sessions, study, gist_timeline(), routing)
    rows = alerts(sessions)
    # The study's own time point (2) keeps its alert; the earlier follow-up's DISC_RECIST_SD_CHOI_PR does not.
    assert [(a.code, a.timepoint, a.severity, a.state) for a in rows] == [
        ("DISC_RECIST_PD_CHOI_PR", 2, "critical", "open")
    ]
    assert rows[0].citation and "Choi" in rows[0].citation
    assert rows[0].patient_pk is not None
    assert sorted(d.sink for d in deliveries(sessions)) == ["hook", "log"]

    # Same inputs again: same row, no new delivery.
    add_result(sessions, study, gist_timeline(), routing, version=2)
    assert count(sessions, AlertRecord) == 1 and count(sessions, AlertDelivery) == 2
    with sessions.begin() as s:
        acknowledge(s, rows[0].id, "dr.house")
    add_result(sessions, study, gist_timeline(), routing, version=3)
    (again,) = alerts(sessions)
    assert again.state == "acknowledged" and again.acknowledged_by == "dr.house" and again.result_version == 3

    # The discordance disappears (density no longer dropped): the alert is resolved, not deleted.
    add_result(sessions, study, gist_timeline(hu_follow_up=70), routing, version=4)
    (resolved,) = [a for a in alerts(sessions) if a.code == "DISC_RECIST_PD_CHOI_PR"]
    assert resolved.state == "resolved" and resolved.resolved_at is not None

    # ... and comes back: reopened as a new revision, delivered again, acknowledgement cleared.
    add_result(sessions, study, gist_timeline(), routing, version=5)
    (back,) = [a for a in alerts(sessions) if a.code == "DISC_RECIST_PD_CHOI_PR"]
    assert (back.state, back.revision, back.acknowledged_by) == ("open", 2, None)
    assert count(sessions, AlertDelivery, revision=2) == 2


def test_warning_only_study_routes_by_severity(sessions) -> None:
    routing = {"hook": frozenset({"critical"}), "log": frozenset({"warning"})}
    study = add_study(sessions, "1.2.826.0.1.2", accession="ACC0002")
    add_result(sessions, study, stable_crc_timeline(), routing)
    rows = alerts(sessions)
    # Baseline (0) and own time point (2) only: time point 1's copy belongs to the earlier study.
    assert [(a.code, a.timepoint) for a in rows] == [("ANC_ATTENUATION_DROP_SIZE_STABLE", 2)]
    assert [d.sink for d in deliveries(sessions)] == ["log"]


def test_operational_alert_is_one_row_per_code_and_subject(sessions) -> None:
    routing = {"log": frozenset({"critical", "warning", "info"}), "hook": frozenset({"critical"})}
    with sessions.begin() as s:
        first = raise_operational(s, "PACS_UNREACHABLE", "PACS did not answer", subject="peer:pacs",
                                  routing=routing, now=T0)  # fmt: skip
    with sessions.begin() as s:
        second = raise_operational(s, "PACS_UNREACHABLE", "PACS still silent", subject="peer:pacs",
                                   routing=routing, now=T0 + timedelta(minutes=5))  # fmt: skip
    assert first.id == second.id
    (row,) = alerts(sessions)
    assert (row.severity, row.message, row.source, row.study_pk) == (
        "critical", "PACS still silent", "operational", None,
    )  # fmt: skip
    assert count(sessions, AlertDelivery) == 2
    with sessions.begin() as s:
        assert resolve_operational(s, "PACS_UNREACHABLE", "peer:pacs")
        assert not resolve_operational(s, "PACS_UNREACHABLE", "peer:pacs")
    assert alerts(sessions)[0].state == "resolved"


def test_acknowledge_keeps_the_first_author(sessions) -> None:
    with sessions.begin() as s:
        row = raise_operational(s, "DISK_LOW", "low", subject="spool", routing={})
    with sessions.begin() as s:
        acknowledge(s, row.id, "alice", now=T0)
    with sessions.begin() as s:
        acknowledge(s, row.id, "bob", now=T0 + timedelta(hours=1))
    (a,) = alerts(sessions)
    assert (a.state, a.acknowledged_by, a.acknowledged_at) == ("acknowledged", "alice", T0)
    with sessions.begin() as s:
        assert acknowledge(s, 999, "x") is None


# ------------------------------------------------------------------------------------------------------
# Sink registry and configuration


def test_registry_builds_each_kind_and_names_bad_options() -> None:
    assert {"webhook", "hl7", "log"} <= set(Sink.registry)

    class PagerSink(Sink):
        kind = "pager-test"

        def deliver(self, message) -> None:
            return None

    assert Sink.registry["pager-test"] is PagerSink
    assert isinstance(build_sink("p", "pager-test", {}), PagerSink)
    with pytest.raises(SinkConfigError, match=r"alerts\.sinks\.w\.url"):
        build_sink("w", "webhook", {"url": "ftp://x", "secret": SECRET})
    with pytest.raises(SinkConfigError, match=r"alerts\.sinks\.w\.secret"):
        build_sink("w", "webhook", {"url": "http://x", "secret": "short"})
    with pytest.raises(SinkConfigError, match=r"unknown sink type 'smoke'"):
        build_sink("s", "smoke", {})
    with pytest.raises(SinkConfigError, match=r"alerts\.sinks\.h\.port"):
        build_sink("h", "hl7", {"host": "127.0.0.1"})
    settings = AlertSettings(sinks={"log": AlertSinkSettings(type="log", severities=["critical"])})
    assert isinstance(build_sinks(settings.sinks)["log"], LogSink)
    del Sink.registry["pager-test"]


def test_backoff_grows_exponentially_to_its_ceiling() -> None:
    s = AlertSettings(retry_initial_s=10, retry_factor=2, retry_max_s=60)
    assert [backoff_s(s, n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


# ------------------------------------------------------------------------------------------------------
# Webhook against a local HTTP receiver


class Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def dispatcher(sessions, sinks: dict[str, Sink], **settings: Any) -> AlertDispatcher:
    s = AlertSettings(retry_initial_s=30, retry_factor=2, retry_max_s=600, **settings)
    routing = {name: frozenset({"critical", "warning", "info"}) for name in sinks}
    return AlertDispatcher(sessions, sinks, s, routing)


def test_webhook_posts_signed_json_and_retries_after_a_server_error(sessions, receiver: Receiver) -> None:
    hook = build_sink("hook", "webhook", {"url": receiver.url, "secret": SECRET, "timeout_s": 5})
    routing = {"hook": frozenset({"critical"})}
    study = add_study(sessions, "1.2.826.0.1.3", patient_id="PID-0003", accession="ACC0003")
    add_result(sessions, study, gist_timeline(), routing)
    d = dispatcher(sessions, {"hook": hook})

    first = d.run_once(T0)
    assert (first.delivered, first.failed) == (0, 1)
    (row,) = deliveries(sessions)
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=30))
    assert row.last_error == "HTTP 500"
    assert d.run_once(T0 + timedelta(seconds=29)).failed == 0  # not due yet: nothing sent
    assert len(receiver.requests) == 1

    second = d.run_once(T0 + timedelta(seconds=30))
    assert second.delivered == 1
    assert deliveries(sessions)[0].state == "delivered"
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        ts = headers["x-liveragent-timestamp"]
        expected = (
            "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        assert hmac.compare_digest(headers["x-liveragent-signature"], expected)
        assert headers["content-type"] == "application/json"
        assert headers["x-liveragent-delivery"] == str(row.id)
    payload = json.loads(receiver.requests[-1][1])
    assert payload["schema"] == "liver-agent.alert/1"
    assert payload["alert"]["code"] == "DISC_RECIST_PD_CHOI_PR"
    assert payload["alert"]["severity"] == "critical"
    assert payload["study"] == {"study_uid": "1.2.826.0.1.3", "accession_number": "ACC0003",
                                "study_date": "2024-05-06"}  # fmt: skip
    assert payload["patient"] == {"id": "PID-0003", "issuer": ""}
    assert {r["criterion"]: r["category"] for r in payload["responses"]} == {"recist": "PD", "choi": "PR"}
    # A tampered body fails verification.
    headers, body = receiver.requests[-1]
    forged = "sha256=" + hmac.new(SECRET.encode(), headers["x-liveragent-timestamp"].encode() + b"." +
                                  body.replace(b"critical", b"info"), hashlib.sha256).hexdigest()  # fmt: skip
    assert forged != headers["x-liveragent-signature"]


def test_delivery_given_up_raises_an_operational_alert_for_the_other_sinks(sessions) -> None:
    port = _closed_port()
    hook = build_sink("hook", "webhook", {"url": f"http://127.0.0.1:{port}/", "secret": SECRET})
    log_sink = build_sink("log", "log", {})
    with sessions.begin() as s:
        raise_operational(
            s, DISK_LOW, "low", subject="spool", routing={"hook": frozenset({"warning"})}, now=T0
        )
    d = dispatcher(sessions, {"hook": hook, "log": log_sink}, give_up_after_s=3600)
    assert d.run_once(T0).failed == 1
    stats = d.run_once(T0 + timedelta(hours=2))
    assert stats.gave_up == 1
    gave_up = [a for a in alerts(sessions) if a.code == DELIVERY_GAVE_UP]
    assert len(gave_up) == 1 and gave_up[0].subject == "sink:hook"
    # Routed to the log sink only, never back to the failing webhook.
    assert [(x.sink, x.alert_pk) for x in deliveries(sessions) if x.alert_pk == gave_up[0].id] == [
        ("log", gave_up[0].id)
    ]
    assert d.run_once(T0 + timedelta(hours=2, seconds=1)).delivered == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------------
# HL7 v2 over MLLP against a local listener


class MLLPListener:
    """Answers each message with the next scripted ACK code; ``None`` means read it and say nothing."""

    def __init__(self, script: list[str | None]) -> None:
        self.script = script
        self.messages: list[hl7.Message] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.held: list[socket.socket] = []

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            buf = b""
            while b"\x1c\x0d" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            text = buf[buf.index(b"\x0b") + 1 : buf.index(b"\x1c\x0d")].decode("utf-8")
            msg = hl7.parse(text)
            self.messages.append(msg)
            code = self.script.pop(0) if self.script else "AA"
            if code is None:
                self.held.append(conn)  # silence: keep the connection open, never answer
                continue
            ack = msg.create_ack(ack_code=code)
            conn.sendall(b"\x0b" + str(ack).encode("utf-8") + b"\x1c\x0d")
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def mllp() -> Iterator[MLLPListener]:
    listener = MLLPListener(["AA", "AE", None, "AA"])
    listener.thread.start()
    yield listener
    listener.close()


def test_hl7_oru_is_acknowledged_and_retried_on_ae_and_silence(sessions, mllp: MLLPListener) -> None:
    sink = build_sink("ris", "hl7", {"host": "127.0.0.1", "port": mllp.port, "timeout_s": 0.5,
                                      "receiving_application": "RIS"})  # fmt: skip
    routing = {"ris": frozenset({"critical"})}
    first = add_study(sessions, "1.2.826.0.1.4", patient_id="PID-0004", patient_name="Roe^Richard",
                      accession="ACC0004")  # fmt: skip
    add_result(sessions, first, gist_timeline(), routing)
    d = dispatcher(sessions, {"ris": sink})

    assert d.run_once(T0).delivered == 1  # AA
    msg = mllp.messages[0]
    assert str(msg.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(msg.segment("PID")[3]).startswith("PID-0004")
    assert str(msg.segment("PID")[5]) == "Roe^Richard"
    obr = msg.segment("OBR")
    assert str(obr[3]).split("^")[0] == "ACC0004" and str(obr[18]) == "ACC0004"
    assert str(obr[19]) == "1.2.826.0.1.4"
    obx = msg.segments("OBX")
    responses = {str(o[3]).split("^")[0]: str(o[5]).split("^")[0] for o in obx if str(o[2]) == "CWE"}
    assert responses == {"RECIST": "PD", "CHOI": "PR"}
    (text_obx,) = [o for o in obx if str(o[2]) == "TX"]
    assert str(text_obx[3]).startswith("DISC_RECIST_PD_CHOI_PR") and str(text_obx[8]) == "AA"
    assert "Choi" in msg.unescape(str(text_obx[5]))
    assert str(msg.segment("ZDS")[1]).startswith("1.2.826.0.1.4")

    second = add_study(sessions, "1.2.826.0.1.5", patient_id="PID-0005", accession="ACC0005")
    add_result(sessions, second, gist_timeline(), routing)
    assert d.run_once(T0).failed == 1  # AE
    row = deliveries(sessions)[-1]
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "ACK AE")
    assert d.run_once(T0 + timedelta(seconds=30)).failed == 1  # no answer within the timeout
    row = deliveries(sessions)[-1]
    assert (row.attempts, row.last_error) == (2, "no ACK within the timeout")
    assert row.next_attempt_at == T0 + timedelta(seconds=30 + 60)
    assert d.run_once(T0 + timedelta(seconds=90)).delivered == 1  # AA
    assert deliveries(sessions)[-1].state == "delivered"
    # Four messages on the wire; the three for the second study carry the same control ID.
    assert len(mllp.messages) == 4
    ids = [str(m.segment("MSH")[10]) for m in mllp.messages[1:]]
    assert len(set(ids)) == 1 and ids[0] != str(mllp.messages[0].segment("MSH")[10])
