"""The delivery outbox through a DICOMweb peer (STOW-RS) against a scripted origin server on 127.0.0.1.

The same transient / permanent split as over DIMSE: HTTP 5xx, 408, 429 and no answer are transient (retried
with back-off, or after the server's ``Retry-After`` when that is longer); 409 and other 4xx are permanent
(quarantined with DELIVERY_REFUSED); in a 202 answer each instance has its own fate (FailureReason 0xA7xx
transient, others permanent). Credentials travel as configured (bearer token from the environment).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from support.agentproc import free_port
from support.http_peer import HttpPeer, failed, stored
from support.worklist import migrated_sessions

from agent.alerts.models import AlertRecord
from agent.alerts.store import DELIVERY_REFUSED
from agent.config import DicomwebPeerSettings, OutboxSettings, Settings
from agent.db.models import OutboxItem, PeerHealth
from agent.pipeline import outbox
from agent.pipeline.health import AlertPolicy
from tests.unit.sr.srgen import ct_image

SETTINGS = OutboxSettings()  # 30 s doubling, capped at 600 s
POLICY = AlertPolicy(routing={"log": frozenset({"critical", "warning", "info"})}, unreachable_after_s=900)
TOKEN = "outbox-token-123"


@pytest.fixture
def sessions(tmp_path: Path):
    s = migrated_sessions(tmp_path / "agent.db")
    yield s
    s.kw["bind"].dispose()


@pytest.fixture
def server():
    p = HttpPeer().start()
    yield p
    p.stop()


def peers(url: str) -> dict[str, DicomwebPeerSettings]:
    return {
        "cloud": DicomwebPeerSettings(
            type="dicomweb", url=url, auth="bearer", token_env="TEST_CLOUD_TOKEN", query_retrieve=False,
            connect_timeout_s=2, read_timeout_s=5,
        )
    }  # fmt: skip


def queue(sessions, tmp_path: Path, *names: str) -> list[str]:
    objects = []
    for name in names:
        ds = ct_image("PIDWEB", name, date(2024, 3, 1))
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        objects.append(outbox.OutboundObject(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    with sessions.begin() as s:
        outbox.queue(s, ["cloud"], objects, None, None)
    return [o.sop_uid for o in objects]


def rows(sessions) -> dict[str, OutboxItem]:
    with sessions() as s:
        return {r.sop_uid: r for r in s.scalars(select(OutboxItem))}


def wait_s(row: OutboxItem) -> float:
    return (row.next_attempt_at - row.last_attempt_at).total_seconds()


def deliver(sessions, url: str, ahead_s: float = 0):
    now = datetime.now(UTC) + timedelta(seconds=ahead_s)
    return outbox.deliver_due(sessions, peers(url), "LIVERAGENT", SETTINGS, now=now, policy=POLICY)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CLOUD_TOKEN", TOKEN)


def test_stored_instances_are_delivered_with_the_bearer_token(sessions, tmp_path: Path, server) -> None:
    uids = queue(sessions, tmp_path, "a", "b")
    server.answers = [lambda posted: (200, {}, stored(posted))]
    assert deliver(sessions, server.url).delivered == 2
    assert server.received == [uids]  # one STOW-RS request for both
    assert server.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert {r.state for r in rows(sessions).values()} == {"delivered"}


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait"),
    [
        (503, "120", 120),  # Retry-After longer than the back-off: honoured
        (503, None, 30),
        (500, "5", 30),  # shorter than the back-off: the back-off wins
        (429, "90", 90),
        (408, None, 30),
    ],
)
def test_transient_http_statuses_wait_the_back_off_or_retry_after(
    sessions, tmp_path: Path, server, status: int, retry_after: str | None, expected_wait: float
) -> None:
    queue(sessions, tmp_path, "a")
    headers = {"Retry-After": retry_after} if retry_after else {}
    server.answers = [lambda posted: (status, headers, None)]
    summary = deliver(sessions, server.url)
    assert (summary.delivered, summary.retried, summary.quarantined) == (0, 1, 0)
    (row,) = rows(sessions).values()
    assert row.state == "pending" and row.last_status == status
    assert wait_s(row) == expected_wait
    with sessions() as s:
        assert s.get(PeerHealth, "cloud") is None  # it answered: no outage clock


def test_retry_after_as_an_http_date(sessions, tmp_path: Path, server) -> None:
    queue(sessions, tmp_path, "a")
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    server.answers = [lambda posted: (503, {"Retry-After": when}, None)]
    deliver(sessions, server.url)
    (row,) = rows(sessions).values()
    assert 290 <= wait_s(row) <= 301


@pytest.mark.parametrize("status", [409, 400, 403])
def test_refusals_are_permanent_and_quarantined(sessions, tmp_path: Path, server, status: int) -> None:
    queue(sessions, tmp_path, "a")
    body = (lambda posted: failed(posted, 0xC000)) if status == 409 else (lambda posted: None)
    server.answers = [lambda posted: (status, {}, body(posted))]
    summary = deliver(sessions, server.url)
    assert (summary.delivered, summary.retried, summary.quarantined) == (0, 0, 1)
    (row,) = rows(sessions).values()
    assert row.state == "quarantined"
    assert row.last_status == (0xC000 if status == 409 else status)
    with sessions() as s:
        codes = [a.code for a in s.scalars(select(AlertRecord))]
    assert codes == [DELIVERY_REFUSED]


def test_each_instance_of_a_partial_answer_has_its_own_fate(sessions, tmp_path: Path, server) -> None:
    ok, busy, bad = queue(sessions, tmp_path, "ok", "busy", "bad")

    def partial(posted: list[str]):
        answer = {**stored([ok]), **failed([busy], 0xA700)}
        answer["00081198"]["Value"] += failed([bad], 0xA900)["00081198"]["Value"]
        return 202, {}, answer

    server.answers = [partial]
    summary = deliver(sessions, server.url)
    assert (summary.delivered, summary.retried, summary.quarantined) == (1, 1, 1)
    got = rows(sessions)
    assert (got[ok].state, got[busy].state, got[bad].state) == ("delivered", "pending", "quarantined")
    assert (got[busy].last_status, got[bad].last_status) == (0xA700, 0xA900)
    # The busy one goes again later, alone.
    server.answers = [lambda posted: (200, {}, stored(posted))]
    assert deliver(sessions, server.url, ahead_s=31).delivered == 1
    assert server.received[-1] == [busy]


def test_no_server_is_transient_and_starts_the_outage_clock(sessions, tmp_path: Path) -> None:
    queue(sessions, tmp_path, "a")
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    summary = deliver(sessions, url)
    assert (summary.delivered, summary.retried, summary.quarantined) == (0, 1, 0)
    (row,) = rows(sessions).values()
    assert row.state == "pending" and row.last_status is None and wait_s(row) == 30
    assert "no answer" in (row.last_error or "")
    with sessions() as s:
        assert s.get(PeerHealth, "cloud") is not None  # the clock runs; the alert waits unreachable_after_s
        assert [a.code for a in s.scalars(select(AlertRecord))] == []


def test_a_dicomweb_peer_needs_its_urls_and_credentials() -> None:
    with pytest.raises(ValueError, match="needs url"):
        Settings(peers={"c": {"type": "dicomweb"}})
    with pytest.raises(ValueError, match="bearer needs token"):
        Settings(peers={"c": {"type": "dicomweb", "url": "https://x.example/dw", "auth": "bearer"}})
    with pytest.raises(ValueError, match="credentials in username"):
        Settings(peers={"c": {"type": "dicomweb", "url": "https://u:p@x.example/dw"}})
    s = Settings(
        peers={
            "c": {"type": "dicomweb", "url": "https://x.example/dw/", "qido_url": "https://q.example/qido"},
            "d": {"ae_title": "PACS", "host": "pacs", "port": 104},
        }
    )
    c = s.peers["c"]
    assert isinstance(c, DicomwebPeerSettings)
    assert (c.service_url("qido"), c.service_url("wado"), c.service_url("stow")) == (
        "https://q.example/qido",
        "https://x.example/dw",
        "https://x.example/dw",
    )
    assert s.peers["d"].type == "dimse"


def test_an_instance_the_answer_does_not_confirm_is_sent_again(sessions, tmp_path: Path, server) -> None:
    confirmed, silent = queue(sessions, tmp_path, "confirmed", "silent")
    server.answers = [lambda posted: (200, {}, stored([confirmed]))]
    summary = deliver(sessions, server.url)
    assert (summary.delivered, summary.retried, summary.quarantined) == (1, 1, 0)
    got = rows(sessions)
    assert (got[confirmed].state, got[silent].state) == ("delivered", "pending")


def test_an_answer_that_is_not_dicom_json_is_retried(sessions, tmp_path: Path, server) -> None:
    queue(sessions, tmp_path, "a")
    server.answers = [lambda posted: (200, {"Content-Type": "application/dicom+json"}, None)]
    server.raw_body = b"{not json"
    summary = deliver(sessions, server.url)
    assert (summary.delivered, summary.quarantined) == (0, 0)
    (row,) = rows(sessions).values()
    assert row.state == "pending" and "unusable answer" in (row.last_error or "")
