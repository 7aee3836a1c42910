"""Dashboard users: names and scrypt password hashes in a JSON file that `cityedge users` manages.

    {"users": {"ana": {"hash": "scrypt$16384$8$1$<salt>$<hash>", "added": "2026-12-03T09:00:00+00:00"}}}

A hash cannot be turned back into its password (scrypt, RFC 7914, with a random salt per
user, memory-hard so that guessing on stolen files is slow); checking compares in constant
time. The file is written with mode 0600, replaced atomically.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
N, R, P = 2**14, 8, 1  # 16 MiB per check: slow to guess, quick enough on a Raspberry Pi
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        want = base64.urlsafe_b64decode(digest + "==")
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt + "=="),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Users:
    path: Path
    users: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Users:
        if not path.exists():
            return cls(path, {})
        try:
            data = json.loads(path.read_text()[:10_000_000])
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a users file ({exc})") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise UserError(f"{path}: not a users file (no 'users' object)")
        good = {
            name: entry
            for name, entry in users.items()
            if isinstance(entry, dict) and isinstance(entry.get("hash"), str) and NAME.match(str(name))
        }
        return cls(path, good)

    def check(self, name: str, password: str) -> bool:
        entry = self.users.get(name)
        if entry is None:
            verify_password(password, _DUMMY)  # as slow for an unknown name as for a wrong password
            return False
        return verify_password(password, entry["hash"])

    def set(self, name: str, password: str) -> None:
        if not NAME.match(name):
            raise UserError(f"bad user name {name[:64]!r}: letters, digits, '_', '.', '@', '-', up to 64")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        self.users[name] = {"hash": hash_password(password), "added": datetime.now(UTC).isoformat(timespec="seconds")}

    def remove(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise UserError(f"no user {name[:64]!r} in {self.path}")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"users": self.users}, out, indent=2)
        os.replace(temporary, self.path)


_DUMMY = hash_password(secrets.token_urlsafe(16))
