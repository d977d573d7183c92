"""Dashboard sessions: who is looking, and the signed cookie that remembers it.

With tokens configured, the login form takes a ``read`` or ``admin`` token once; the dashboard
then keeps a session cookie instead of the token. The cookie holds the token's *name* and scope,
the queues it is limited to (if any), an expiry (never later than the token's own) and a random
session id, signed with HMAC-SHA256; it never holds the token. It is
HttpOnly, SameSite=Strict, limited to the dashboard's path, and Secure over HTTPS (or with
``ui.cookie_secure``).

Keys come from ``ui.session_keys`` (the first signs, every one verifies, so a key can be rotated
in); without any, a random key is drawn per process. A session is refused when its signature,
expiry or form is wrong, when it was logged out, when its token has expired, or when its token
is no longer configured with that scope and those queues.

Logout remembers the session id until the session would have expired, in this process. (With
several api processes, a copied cookie stays valid on the others until it expires; the
browser that logged out has dropped it.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

import attrs

from monoq.api.tokens import TokenTable

SESSION_COOKIE: Final = "monoq_session"
CSRF_COOKIE: Final = "monoq_csrf"
_VERSION: Final = 1

ViewerScope = Literal["read", "admin"]


@attrs.frozen
class Viewer:
    """Who is looking at the dashboard.

    ``scope`` is ``admin`` (may act) or ``read`` (sees, never acts). ``name`` is the token's
    configured name, None when the dashboard is open (no tokens configured). ``session`` is the
    session id, None when open. ``queues`` are the queues the token is limited to (None: every
    queue): the dashboard then shows and acts on those queues only.
    """

    scope: ViewerScope
    name: str | None = None
    session: str | None = None
    expires: float | None = None
    queues: frozenset[str] | None = None

    @property
    def can_act(self) -> bool:
        """True for admin viewers: action buttons are shown and their POSTs accepted."""
        return self.scope == "admin"

    @property
    def open(self) -> bool:
        """True when no tokens are configured (there is no login)."""
        return self.name is None


OPEN_VIEWER: Final = Viewer(scope="admin")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks signed session cookies; remembers logged-out sessions."""

    MAX_REVOKED: Final = 100_000

    def __init__(
        self,
        keys: Sequence[str],
        lifetime: float,
        tokens: TokenTable,
        clock: Callable[[], float] = time.time,
    ) -> None:
        raw = [key.encode("utf-8") for key in keys] or [secrets.token_bytes(32)]
        # Derived keys: the configured secrets never sign anything directly.
        self._keys = [hmac.new(key, b"monoq-ui-session", hashlib.sha256).digest() for key in raw]
        self.csrf_secret = hmac.new(raw[0], b"monoq-ui-csrf", hashlib.sha256).hexdigest()
        self.lifetime = lifetime
        self.tokens = tokens
        self.clock = clock
        self._revoked: dict[str, float] = {}  # session id -> its expiry
        self._lock = threading.Lock()

    def _sign(self, body: bytes, key: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()

    def issue(self, name: str, scope: ViewerScope, *, queues: frozenset[str] | None = None,
              token_expires: float | None = None) -> tuple[str, Viewer]:
        """A new cookie value for the token ``name`` of ``scope`` (limited to ``queues``), and
        its viewer. The session ends after ``lifetime``, or when the token expires
        (``token_expires``, a POSIX time) if that is sooner."""
        expires = int(self.clock() + self.lifetime)
        if token_expires is not None:
            expires = min(expires, int(token_expires))
        session = secrets.token_urlsafe(16)
        data: dict[str, object] = {"v": _VERSION, "n": name, "s": scope, "e": expires,
                                   "i": session}
        if queues is not None:
            data["q"] = sorted(queues)
        body = json.dumps(data, separators=(",", ":")).encode()
        value = _b64(body) + "." + _b64(self._sign(body, self._keys[0]))
        return value, Viewer(scope=scope, name=name, session=session, expires=expires,
                             queues=queues)

    def check(self, value: str | None) -> Viewer | None:
        """The viewer of a cookie value, or None if it is not a valid, live session."""
        if not value or value.count(".") != 1 or len(value) > 4096:
            return None
        body_text, _, mac_text = value.partition(".")
        try:
            body = _unb64(body_text)
            mac = _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not any(hmac.compare_digest(mac, self._sign(body, key)) for key in self._keys):
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        name, scope, expires, session = data.get("n"), data.get("s"), data.get("e"), data.get("i")
        listed = data.get("q")
        if not (isinstance(name, str) and isinstance(session, str)
                and isinstance(expires, int) and scope in ("read", "admin")
                and (listed is None or (isinstance(listed, list)
                                        and all(isinstance(q, str) for q in listed)))):
            return None
        queues = None if listed is None else frozenset(listed)
        if expires <= self.clock():
            return None
        with self._lock:
            if session in self._revoked:
                return None
        # The token must still be configured with this scope and these queues, and be live.
        if not any(e.name == name and e.scope == scope and e.queues == queues and not e.expired()
                   for e in self.tokens.entries):
            return None
        return Viewer(scope=scope, name=name, session=session, expires=expires, queues=queues)

    def revoke(self, viewer: Viewer) -> None:
        """Forget a session (logout): its cookie is refused from now on in this process."""
        if viewer.session is None or viewer.expires is None:
            return
        now = self.clock()
        with self._lock:
            if len(self._revoked) >= self.MAX_REVOKED:
                for sid in [s for s, exp in self._revoked.items() if exp <= now]:
                    del self._revoked[sid]
            self._revoked[viewer.session] = viewer.expires
