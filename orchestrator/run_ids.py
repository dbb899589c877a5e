"""Run IDs that say when they were made and that this service made them.

32 hex digits, as before: 12 of the time in milliseconds, 12 random, and 8 of an
HMAC of the first 24 under a secret of the data directory. A run that retention
deleted leaves no row behind; its ID still proves it existed and when it started,
so its status answers "expired" rather than "does not exist", with nothing kept
per deleted run (the database stays flat however many runs come and go).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

#: The meta row that holds the secret (made once per data directory).
SECRET_NAME = "run-id-key"


class RunIds:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def new(self, now: datetime) -> str:
        millis = int(now.timestamp() * 1000) & (2**48 - 1)
        body = f"{millis:012x}{secrets.token_hex(6)}"
        return body + self._mac(body)

    def issued(self, run_id: str) -> datetime | None:
        """When this service made ``run_id``; None for an ID it did not make (made
        before IDs carried their time, or made up)."""
        if len(run_id) != 32:
            return None
        body, mac = run_id[:24], run_id[24:]
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        return datetime.fromtimestamp(int(body[:12], 16) / 1000, UTC)

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()[:8]


__all__ = ["SECRET_NAME", "RunIds"]
