"""Credentials of the HTTP service: hashed API tokens and passwords, signed session cookies, CSRF tokens.

Nothing secret is stored in clear: the configuration holds ``sha256$<hex>`` (fine for long random tokens)
or ``pbkdf2_sha256$<iterations>$<salt>$<hex>`` hashes, made by ``liver-agent web hash-token``. Comparisons
are constant-time. The session cookie is ``<session id>|<expiry>|<HMAC>`` under ``web.session_secret``; the
session itself (its user, whether it is still open) is kept in the database (``agent.web.users``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.config import APITokenSettings

PBKDF2_ITERATIONS = 240_000
SESSION_COOKIE = "liver_agent_session"


def hash_secret(secret: str, method: str = "pbkdf2_sha256", iterations: int = PBKDF2_ITERATIONS) -> str:
    if method == "sha256":
        return "sha256$" + hashlib.sha256(secret.encode("utf-8")).hexdigest()
    if method == "pbkdf2_sha256":
        salt = secrets.token_hex(16)
        digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt.encode("ascii"), iterations)
        return f"pbkdf2_sha256${iterations}${salt}${digest.hex()}"
    raise ValueError(f"unknown hash method {method!r} (sha256 or pbkdf2_sha256)")


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the stored hash; malformed hashes never match."""
    parts = stored.split("$")
    try:
        if parts[0] == "sha256" and len(parts) == 2:
            candidate = hashlib.sha256(secret.encode("utf-8")).hexdigest()
            return hmac.compare_digest(candidate, parts[1].lower())
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            salt = parts[2].encode("ascii")
            digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
            return hmac.compare_digest(digest.hex(), parts[3].lower())
    except (ValueError, UnicodeError):
        return False
    return False


def check_hash_format(stored: str) -> bool:
    parts = stored.split("$")
    if parts[0] == "sha256":
        return len(parts) == 2 and len(parts[1]) == 64
    return parts[0] == "pbkdf2_sha256" and len(parts) == 4 and parts[1].isdigit()


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    kind: str  # "token" or "user"


class TokenVerifier:
    """Bearer token -> Principal; answers are cached by the token's SHA-256 (PBKDF2 is slow on purpose)."""

    def __init__(self, tokens: Sequence[APITokenSettings]) -> None:
        self.tokens = list(tokens)
        self._cache: dict[str, Principal | None] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal | None:
        if not token or len(token) > 512:
            return None
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = None
        for t in self.tokens:
            if verify_secret(token, t.hash.get_secret_value()):
                found = Principal(t.name, frozenset(t.scopes), "token")
                break
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = found
        return found


class SessionSigner:
    def __init__(self, secret: str, minutes: int) -> None:
        self.key = (secret or secrets.token_hex(32)).encode("utf-8")
        self.lifetime_s = minutes * 60

    def _mac(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode("utf-8"), hashlib.sha256).hexdigest()

    def issue(self, session_id: str, now: float | None = None) -> str:
        if "|" in session_id:
            raise ValueError("a session id has no '|'")
        expiry = int((now or time.time()) + self.lifetime_s)
        payload = f"{session_id}|{expiry}"
        return f"{payload}|{self._mac(payload)}"

    def session_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a cookie we signed and that has not expired, else None."""
        if not cookie or len(cookie) > 512 or cookie.count("|") != 2:
            return None
        session_id, expiry, mac = cookie.split("|")
        if not hmac.compare_digest(mac, self._mac(f"{session_id}|{expiry}")):
            return None
        try:
            return session_id if int(expiry) >= (now or time.time()) else None
        except ValueError:
            return None

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf|" + cookie)
