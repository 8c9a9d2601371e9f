"""The HTTP service inside a real ``liver-agent serve``: health, readiness, and /metrics counters moving when
DCMTK's storescu sends a study and when an association is rejected."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.agentproc import free_port, wait_until
from support.dicomgen import make_study

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(metrics: dict, name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def test_metrics_count_a_study_sent_with_storescu(make_agent, tmp_path) -> None:
    web_port = free_port()
    agent = make_agent(
        LIVER_AGENT_WEB__ENABLED="true",
        LIVER_AGENT_WEB__PORT=str(web_port),
        LIVER_AGENT_DICOM__ACCEPTED_CALLING_AETS='["STORESCU"]',
    ).start()
    base = f"http://127.0.0.1:{web_port}"
    assert any(e["event"] == "web.listening" for e in agent.events())
    assert get(f"{base}/healthz") == (200, '{"status":"ok"}')
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 200, 10)
    ready = json.loads(get(f"{base}/readyz")[1])
    assert ready["checks"] == {"database": True, "scheduler": True, "dicom": True}

    before = samples(get(f"{base}/metrics")[1])
    study = make_study(tmp_path / "study", key="metrics")
    sent = agent.store(*study.files)
    assert sent.returncode == 0, sent.stderr
    refused = agent.store(study.files[0], calling="INTRUDER")
    assert refused.returncode != 0
    sql = "SELECT state FROM studies WHERE study_uid = :u"
    assert wait_until(lambda: agent.scalar(sql, u=study.study_uid) not in (None, "receiving"), 20)

    after = samples(get(f"{base}/metrics")[1])
    received = total(after, "liver_agent_instances_received_total") - total(
        before, "liver_agent_instances_received_total"
    )
    assert received == len(study.files)
    assert total(after, "liver_agent_received_bytes_total") - total(
        before, "liver_agent_received_bytes_total"
    ) >= sum(p.stat().st_size for p in study.files) - 1000 * len(study.files)
    assert (
        total(after, "liver_agent_association_rejects_total")
        - total(before, "liver_agent_association_rejects_total")
        == 1
    )
    states = {dict(k[1])["state"]: v for k, v in after.items() if k[0] == "liver_agent_studies"}
    assert sum(states.values()) == 1
    assert ("liver_agent_outbox_pending", (("queue", "alerts"),)) in after
    assert agent.stop() == 0
    assert any(e["event"] == "web.stopped" for e in agent.events())


def test_logout_ends_the_session_on_the_running_server(make_agent) -> None:
    """A user added with ``liver-agent web add-user``; the session cookie taken before logout, replayed over
    real HTTP, no longer opens /worklist; a password change ends the other sessions."""
    web_port = free_port()
    agent = make_agent(LIVER_AGENT_WEB__ENABLED="true", LIVER_AGENT_WEB__PORT=str(web_port))

    def web_cli(*argv: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", "web", *argv],
            input=password + "\n",
            env=agent.env(),
            cwd=agent.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = web_cli("add-user", "rad2", password="a long password")
    assert added.returncode == 0, added.stderr
    agent.start()
    base = f"http://127.0.0.1:{web_port}"
    assert wait_until(lambda: get(f"{base}/healthz")[0] == 200, 20)

    def call(path: str, data: bytes | None = None, cookie: str = "") -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{base}{path}", data=data, headers={"Cookie": cookie} if cookie else {}
        )
        try:
            with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as exc:  # the 303s, not followed
            return exc.code, exc.headers

    def login() -> str:
        form = urllib.parse.urlencode({"username": "rad2", "password": "a long password"}).encode()
        status, headers = call("/login", form)
        assert status == 303
        return str(headers["Set-Cookie"]).split(";")[0]

    def worklist(cookie: str) -> int:
        return call("/worklist", cookie=cookie)[0]

    kept, other = login(), login()
    assert worklist(kept) == 200 and worklist(other) == 200
    assert call("/logout", b"", kept)[0] == 303
    assert worklist(kept) == 303  # back to the login page: the session ended on the server
    assert worklist(other) == 200
    changed = web_cli("set-password", "rad2", password="a newer password")
    assert changed.returncode == 0 and "1 open session(s) ended" in changed.stdout, changed.stderr
    assert worklist(other) == 303
    assert agent.stop() == 0


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None
