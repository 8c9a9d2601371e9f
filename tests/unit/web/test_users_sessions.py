"""Worklist users in the database (``liver-agent web add-user``, ``set-password``, ``remove-user``) and
sessions that end on the server: a cookie kept from before a logout, a password change or a removal
opens nothing."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.worklist import migrated_sessions

from agent.cli import main
from agent.config import WebSettings, WebUserSettings
from agent.web import users
from agent.web.app import create_app
from agent.web.auth import SESSION_COOKIE, hash_secret


def settings(config_hash: str | None = None) -> WebSettings:
    config_hash = config_hash or hash_secret("config-password", iterations=1000)
    return WebSettings(
        users=[WebUserSettings(username="cfg", password_hash=config_hash)], session_secret="users-test-secret"
    )


def cli(monkeypatch: pytest.MonkeyPatch, db: Path, stdin: str, *argv: str) -> int:
    monkeypatch.setenv("LIVER_AGENT_DATABASE__URL", f"sqlite:///{db}")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["web", *argv])


def login(client: TestClient, user: str, password: str) -> str:
    r = client.post("/login", data={"username": user, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.cookies[SESSION_COOKIE]


def opens_worklist(client: TestClient, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)
    r = client.get("/worklist", follow_redirects=False)
    client.cookies.clear()
    return r.status_code == 200


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    migrated_sessions(path).kw["bind"].dispose()
    return path


def test_add_user_stores_a_hash_and_the_user_logs_in(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(monkeypatch, db, "a long password\n", "add-user", "alice", "--display-name", "Dr A") == 0
    stored = sqlite3.connect(db).execute("SELECT password_hash, display_name FROM web_users").fetchall()
    assert len(stored) == 1 and stored[0][0].startswith("pbkdf2_sha256$") and "long" not in stored[0][0]
    assert stored[0][1] == "Dr A"
    assert cli(monkeypatch, db, "", "list-users") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "alice\tdatabase"
    client = TestClient(create_app(settings(), migrated_sessions(db)))
    assert opens_worklist(client, login(client, "alice", "a long password"))
    r = client.post("/login", data={"username": "alice", "password": "wrong one"}, follow_redirects=False)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("add-user", "bob"), "short\n", "at least 8 characters"),
        (("add-user", "bob"), "\n", "no password"),
        (("add-user", "cfg"), "a long password\n", "configuration"),
        (("add-user", "two words"), "a long password\n", "without spaces"),
        (("set-password", "nobody"), "a long password\n", "no user nobody"),
        (("remove-user", "cfg"), "", "configuration"),
    ],
)
def test_refusals_exit_2_with_the_reason(
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    stdin: str,
    message: str,
) -> None:
    monkeypatch.setenv(
        "LIVER_AGENT_WEB__USERS", '[{"username": "cfg", "password_hash": "sha256$' + "0" * 64 + '"}]'
    )
    assert cli(monkeypatch, db, stdin, *argv) == 2
    assert message in capsys.readouterr().err


def test_adding_a_name_twice_is_refused(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(monkeypatch, db, "a long password\n", "add-user", "alice") == 0
    assert cli(monkeypatch, db, "another password\n", "add-user", "alice") == 2


def test_a_cookie_taken_before_logout_opens_nothing_after(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(monkeypatch, db, "a long password\n", "add-user", "alice") == 0
    client = TestClient(create_app(settings(), migrated_sessions(db)))
    kept = login(client, "alice", "a long password")
    other = login(client, "alice", "a long password")  # a second workstation
    assert opens_worklist(client, kept)
    client.cookies.set(SESSION_COOKIE, kept)
    assert client.post("/logout", follow_redirects=False).status_code == 303
    assert not opens_worklist(client, kept)
    assert opens_worklist(client, other)  # logout ends that session only


def test_a_new_password_or_a_removal_ends_every_session(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(monkeypatch, db, "a long password\n", "add-user", "alice") == 0
    client = TestClient(create_app(settings(), migrated_sessions(db)))
    before = login(client, "alice", "a long password")
    assert cli(monkeypatch, db, "a newer password\n", "set-password", "alice") == 0
    assert not opens_worklist(client, before)
    after = login(client, "alice", "a newer password")
    assert opens_worklist(client, after)
    assert cli(monkeypatch, db, "", "remove-user", "alice") == 0
    assert not opens_worklist(client, after)
    r = client.post(
        "/login", data={"username": "alice", "password": "a newer password"}, follow_redirects=False
    )
    assert r.status_code == 401


def test_a_configured_users_new_password_hash_ends_their_sessions(db: Path) -> None:
    sessions = migrated_sessions(db)
    client = TestClient(create_app(settings(), sessions))
    cookie = login(client, "cfg", "config-password")
    assert opens_worklist(client, cookie)
    # The administrator puts a new hash in the configuration and restarts with the same session secret.
    changed = TestClient(create_app(settings(hash_secret("new config password", iterations=1000)), sessions))
    assert not opens_worklist(changed, cookie)


def test_an_expired_session_is_over_and_pruned_at_the_next_login(db: Path) -> None:
    sessions = migrated_sessions(db)
    configured = settings().users
    with sessions.begin() as s:
        stored = users.password_hash(s, configured, "cfg")
        assert stored is not None
        old = users.open_session(s, "cfg", stored, timedelta(minutes=1))
    with sessions() as s:
        assert users.session_user(s, configured, old) == "cfg"
        later = datetime.now(UTC) + timedelta(minutes=2)
        assert users.session_user(s, configured, old, now=later) is None
    with sessions.begin() as s:
        s.execute(
            users.WebSession.__table__.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        users.open_session(s, "cfg", stored, timedelta(minutes=1))
    assert sqlite3.connect(db).execute("SELECT count(*) FROM web_sessions").fetchone() == (1,)
