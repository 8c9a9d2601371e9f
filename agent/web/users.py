"""Worklist users and their login sessions.

Users come from the configuration (``web.users``, changed by editing it) or from the database (``web_users``,
managed with ``liver-agent web add-user``, ``set-password`` and ``remove-user``); a name lives in one place
only, and the configuration is looked at first.

A login session is a row of ``web_sessions``; the session cookie carries its random id (signed, see
``SessionSigner``) and the table only that id's SHA-256. A session ends server-side, whatever cookie a browser
keeps: at logout (its row is deleted), at expiry, when the user is removed, and when the user's password
changes (the row remembers a fingerprint of the password hash at login; ``set-password`` also deletes the
user's rows, and an edited configuration hash no longer matches the fingerprint).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from agent.config import WebUserSettings
from agent.db.models import WebSession, WebUser, utcnow
from agent.web.auth import PBKDF2_ITERATIONS, hash_secret, verify_secret

MIN_PASSWORD_LENGTH = 8


class UserError(ValueError):
    """A user cannot be added, changed or removed; the message says why."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _configured(users: Sequence[WebUserSettings], username: str) -> WebUserSettings | None:
    for u in users:
        if hmac.compare_digest(u.username.encode("utf-8"), username.encode("utf-8")):
            return u
    return None


def password_hash(session: Session, users: Sequence[WebUserSettings], username: str) -> str | None:
    """The stored password hash of ``username`` (configuration first, then the database), or None."""
    configured = _configured(users, username)
    if configured is not None:
        return configured.password_hash.get_secret_value()
    return session.scalar(select(WebUser.password_hash).where(WebUser.username == username))


def authenticate(
    session: Session, users: Sequence[WebUserSettings], username: str, password: str
) -> str | None:
    """The stored hash of ``username`` if ``password`` matches it, else None (same time for unknown names)."""
    stored = password_hash(session, users, username)
    if stored is None:
        verify_secret(password, f"pbkdf2_sha256${PBKDF2_ITERATIONS}$00$00")
        return None
    return stored if verify_secret(password, stored) else None


def open_session(session: Session, username: str, stored_hash: str, lifetime: timedelta) -> str:
    """Record a new session of ``username`` and return its id (for the cookie); expired rows are pruned."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_hash=_sha256(session_id),
            username=username,
            password_fingerprint=_sha256(stored_hash),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return session_id


def session_user(
    session: Session, users: Sequence[WebUserSettings], session_id: str, now: datetime | None = None
) -> str | None:
    """The user of a live session, or None when it ended (logout, expiry, removal, new password)."""
    row = session.get(WebSession, _sha256(session_id))
    if row is None or row.expires_at <= (now or datetime.now(UTC)):
        return None
    stored = password_hash(session, users, row.username)
    if stored is None or not hmac.compare_digest(row.password_fingerprint, _sha256(stored)):
        return None
    return row.username


def end_session(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_hash == _sha256(session_id)))


def end_sessions_of(session: Session, username: str) -> int:
    """End every session of ``username``; returns how many there were."""
    result = session.execute(delete(WebSession).where(WebSession.username == username))
    return int(getattr(result, "rowcount", 0) or 0)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def add_user(
    session: Session,
    users: Sequence[WebUserSettings],
    username: str,
    password: str,
    display_name: str | None = None,
) -> None:
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise UserError("a user name is 1 to 64 characters without spaces")
    if _configured(users, username) is not None:
        raise UserError(f"{username} is a user of the configuration (web.users); change it there")
    if session.scalar(select(WebUser.id).where(WebUser.username == username)) is not None:
        raise UserError(f"{username} exists already (use set-password to change the password)")
    check_password_strength(password)
    now = utcnow()
    session.add(
        WebUser(
            username=username,
            password_hash=hash_secret(password),
            display_name=display_name,
            created_at=now,
            updated_at=now,
        )
    )


def _stored_user(session: Session, users: Sequence[WebUserSettings], username: str) -> WebUser:
    user = session.scalar(select(WebUser).where(WebUser.username == username))
    if user is None:
        if _configured(users, username) is not None:
            raise UserError(f"{username} is a user of the configuration (web.users); change it there")
        raise UserError(f"no user {username}")
    return user


def set_password(session: Session, users: Sequence[WebUserSettings], username: str, password: str) -> int:
    """Change the password of a database user and end their sessions; returns how many ended."""
    user = _stored_user(session, users, username)
    check_password_strength(password)
    user.password_hash = hash_secret(password)
    user.updated_at = utcnow()
    return end_sessions_of(session, username)


def remove_user(session: Session, users: Sequence[WebUserSettings], username: str) -> int:
    """Remove a database user and end their sessions; returns how many ended."""
    session.delete(_stored_user(session, users, username))
    return end_sessions_of(session, username)


def list_users(session: Session, users: Sequence[WebUserSettings]) -> list[tuple[str, str]]:
    """(name, where it is kept) of every user."""
    found = [(u.username, "configuration") for u in users]
    stored = session.scalars(select(WebUser.username).order_by(WebUser.username))
    found += [(name, "database") for name in stored]
    return found
