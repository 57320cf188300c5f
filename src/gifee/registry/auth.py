"""Who may do what: password file, rights file, scopes, and the bearer tokens gifee signs.

Rules:
* Modes: `none` (everyone may do everything), `basic` (HTTP Basic checked against the
  password file on every request) and `token` (the Docker token flow: the registry
  answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, the
  client fetches a token from `/token` with Basic credentials, and presents it).
* Password file: one `user:pbkdf2-sha256$<iterations>$<salt, base64>$<key, base64>` a
  line (`#` comments); PBKDF2-HMAC-SHA256 with a 16-byte random salt and a 32-byte key.
  `gifee registry passwd` writes such lines.
* Rights file (JSON): `{"<user>": {"<repository pattern>": ["pull", "push"]}}`; patterns
  are shell globs over the whole name (`*` crosses `/`); the user `*` stands for every
  authenticated user, `anonymous` for requests without credentials. Without a rights
  file, authenticated users may pull and push everything and anonymous users nothing.
  `push` covers deletes.
* A request needs `pull` on its repository for GET/HEAD and `push` otherwise; `/v2/`
  needs only a valid identity (anonymous is refused so that clients learn to log in). A
  cross-repository mount also needs `pull` on the source, else it becomes a plain upload.
* Tokens: `base64url(claims JSON).base64url(HMAC-SHA256(key, first part))`; claims `sub`,
  `aud` (the service), `exp`, `iat` and `access` (scopes with the actions granted,
  which are the requested ones the rights allow). A token endpoint refuses bad
  credentials with 401 but grants an anonymous or partial token otherwise.

Nothing here does I/O except reading nothing: callers pass file contents in.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import hashlib
import hmac
import json
import os
import time
from typing import Any

ANONYMOUS = "anonymous"
EVERY_USER = "*"
PBKDF2_ITERATIONS = 100_000
SCHEME = "pbkdf2-sha256"


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, dklen=32)
    return f"{SCHEME}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(stored: str, password: str) -> bool:
    try:
        scheme, iterations, salt_b64, key_b64 = stored.split("$")
        if scheme != SCHEME:
            return False
        salt, key = base64.b64decode(salt_b64), base64.b64decode(key_b64)
        rounds = int(iterations)
    except (ValueError, binascii.Error):
        return False
    if not 1 <= rounds <= 10_000_000:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds, dklen=len(key))
    return hmac.compare_digest(actual, key)


def parse_password_file(text: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if sep and user:
            users[user] = stored
    return users


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def parse_bearer(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


@dataclasses.dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    @staticmethod
    def parse(text: str) -> Scope:
        head, sep, actions = text.rpartition(":")
        kind, sep2, name = head.partition(":")
        if not sep or not sep2 or not kind or not name:
            raise ValueError(f"scope {text!r} is not type:name:actions")
        return Scope(kind, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def repository_scope(name: str, *actions: str) -> Scope:
    return Scope("repository", name, frozenset(actions))


def required_action(method: str) -> str:
    return "pull" if method in ("GET", "HEAD") else "push"


class Rights:
    """Which actions a user has on a repository."""

    def __init__(self, table: dict[str, dict[str, list[str]]] | None) -> None:
        self.table = table

    @staticmethod
    def parse(text: str) -> Rights:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("rights file: not a JSON object")
        table: dict[str, dict[str, list[str]]] = {}
        for user, patterns in doc.items():
            if not isinstance(patterns, dict):
                raise ValueError(f"rights file: {user!r} does not map to patterns")
            table[user] = {}
            for pattern, actions in patterns.items():
                if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
                    raise ValueError(f"rights file: {user!r}/{pattern!r} is not a list of actions")
                table[user][pattern] = actions
        return Rights(table)

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        if self.table is None:
            return frozenset() if user is None else frozenset({"pull", "push"})
        keys = [ANONYMOUS] if user is None else [user, EVERY_USER]
        granted: set[str] = set()
        for key in keys:
            for pattern, actions in self.table.get(key, {}).items():
                if fnmatch.fnmatchcase(repository, pattern):
                    granted.update(actions)
        if "*" in granted:
            granted.update({"pull", "push"})
        return frozenset(granted & {"pull", "push"})

    def grant(self, user: str | None, requested: Scope) -> Scope:
        if requested.type != "repository":
            return Scope(requested.type, requested.name, frozenset())
        return Scope(requested.type, requested.name, requested.actions & self.actions(user, requested.name))


# ---------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(key: bytes, subject: str | None, service: str, access: list[Scope],
                ttl: int = 300, now: float | None = None) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject or "",
        "aud": service,
        "iat": issued,
        "exp": issued + ttl,
        "access": [{"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in access if s.actions],
    }
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    token = f"{payload}.{signature}"
    return {"token": token, "access_token": token, "expires_in": ttl,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued))}


@dataclasses.dataclass(frozen=True)
class TokenClaims:
    subject: str
    access: dict[tuple[str, str], frozenset[str]]

    def allows(self, scope: Scope) -> bool:
        return scope.actions <= self.access.get((scope.type, scope.name), frozenset())


def verify_token(key: bytes, token: str, service: str, now: float | None = None) -> TokenClaims:
    payload, sep, signature = token.partition(".")
    if not sep:
        raise ValueError("malformed token")
    expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(signature), expected):
            raise ValueError("bad token signature")
        claims = json.loads(_unb64(payload))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"bad token: {e}") from None
    if claims.get("aud") != service:
        raise ValueError("token for another service")
    if (time.time() if now is None else now) >= claims.get("exp", 0):
        raise ValueError("token expired")
    access: dict[tuple[str, str], frozenset[str]] = {}
    for entry in claims.get("access", []):
        k = (str(entry.get("type")), str(entry.get("name")))
        access[k] = access.get(k, frozenset()) | frozenset(entry.get("actions", []))
    return TokenClaims(str(claims.get("sub", "")), access)


def bearer_challenge(realm: str, service: str, scopes: list[Scope], error: str | None = None) -> str:
    parts = [f'realm="{realm}"', f'service="{service}"']
    if scopes:
        parts.append('scope="' + " ".join(str(s) for s in scopes) + '"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


def basic_challenge(realm: str) -> str:
    return f'Basic realm="{realm}"'
