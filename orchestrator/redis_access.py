"""How the service and workers reach Redis: one URL, the password kept out of it, TLS,
and a Sentinel-managed Redis followed across failovers.

- ``redis://host:6379/0``; ``rediss://host:6380/0`` for TLS; ``unix:///run/redis.sock``.
- ``redis+sentinel://host1:26379,host2:26379,host3:26379/<master>/0``: the sentinels
  are asked for the master of that name, and again whenever it stops answering as the
  master (a failover). ``rediss+sentinel://``: TLS to the sentinels and the master.

The password comes from ``queue.password_file`` (``--queue-password-file``), else the
``PIPEWELL_REDIS_PASSWORD`` environment variable, else the URL: the first two keep it
out of ``ps`` and of config files. TLS trusts ``queue.tls_ca_file`` (else the system's
CAs) and presents ``queue.tls_cert_file`` and ``tls_key_file`` when given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from redis import asyncio as aioredis

PASSWORD_VARIABLE = "PIPEWELL_REDIS_PASSWORD"
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
#: Seconds to connect, and between two checks that an idle connection still answers.
CONNECT_TIMEOUT = 5
HEALTH_CHECK_EVERY = 10


@dataclass(frozen=True)
class RedisAccess:
    url: str
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def password(self) -> str | None:
        """The password to authenticate with, from the file, the environment or the URL."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the Redis password file {self.password_file}: {exc.strerror}"
                ) from exc
        if os.environ.get(PASSWORD_VARIABLE):
            return os.environ[PASSWORD_VARIABLE]
        password = urlsplit(self.url).password
        return unquote(password) if password else None

    def client(self) -> aioredis.Redis:
        """A client that connects on first use (and again after a drop or a failover)."""
        # Imported here: the settings name this module, and every command reads them.
        from redis import asyncio as aioredis
        from redis.asyncio.sentinel import Sentinel

        parts = urlsplit(self.url)
        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "health_check_interval": HEALTH_CHECK_EVERY,
            "password": self.password(),
        }
        tls = parts.scheme in ("rediss", "rediss+sentinel")
        if tls:
            options |= self._tls_options()
        if parts.scheme not in SENTINEL_SCHEMES:
            # The URL's password would win over the one given: it goes as given only.
            return aioredis.from_url(_without_password(self.url), **options)
        sentinels, master, db = _sentinel_parts(self.url)
        sentinel_options = {"socket_connect_timeout": CONNECT_TIMEOUT}
        if tls:
            sentinel_options |= {"ssl": True, **self._tls_options()}
        # Sentinels without a password of their own (requirepass is the master's).
        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_options, **options)
        return sentinel.master_for(master, db=db, ssl=tls)

    def _tls_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(self.tls_ca_file)
        if self.tls_cert_file is not None:
            options["ssl_certfile"] = str(self.tls_cert_file)
            options["ssl_keyfile"] = str(self.tls_key_file or self.tls_cert_file)
        return options


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """(sentinel addresses, master name, database) of a redis+sentinel:// URL."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"sentinel address {address!r} in the queue URL is not host:port; write "
                "redis+sentinel://host1:26379,host2:26379/<master name>/0"
            )
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(
            "the queue URL names no master: write redis+sentinel://host1:26379,host2:26379/"
            "<master name>/0"
        )
    return sentinels, path[0], int(path[1]) if len(path) == 2 else 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=user + host).geturl()


def safe_url(url: str) -> str:
    """The URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


__all__ = ["PASSWORD_VARIABLE", "SCHEMES", "RedisAccess", "safe_url"]
