"""One connection to Redis that never slows a build down: what the Redis cache tier and
the state shared between processes (rate limits, budgets, locks; trinity.llm) stand on.

Every call has a short connection and socket timeout (0.5 s by default), redis-py's own
retries are off, and a small circuit breaker opens on the first failure: after one
warning (`purpose` says what goes on without Redis) every call returns its default
without waiting on Redis again, for the rest of the run (or until `reset_after` seconds
have passed, for long-lived processes that ask for it). redis-py is imported here, so
only a run that uses Redis pays for importing it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from trinity.cache.settings import RedisTierSettings
from trinity.logs import get_logger
from trinity.messages import one_line

log = get_logger(__name__)

T = TypeVar("T")

# What a broken, stopped or unreachable Redis raises; redis-py wraps most of it already.
FAILURES = (redis.RedisError, OSError, TimeoutError)


class RedisBreaker:
    """Open after the first failure; closed again only after `reset_after` seconds, if set."""

    def __init__(
        self, reset_after: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reset_after = reset_after
        self.clock = clock
        self.opened_at: float | None = None
        self.openings = 0

    @property
    def is_open(self) -> bool:
        if self.opened_at is None:
            return False
        if self.reset_after is not None and self.clock() - self.opened_at >= self.reset_after:
            self.opened_at = None  # let the next call try Redis again
            return False
        return True

    def trip(self) -> bool:
        """Open the breaker; True if this call opened it (and so should say why)."""
        if self.opened_at is not None:
            return False
        self.opened_at = self.clock()
        self.openings += 1
        return True


class RedisLink:
    """A sync and an asyncio client to one Redis, behind one breaker.

    `purpose` ends the one warning an outage gives, saying what carries on without Redis
    ("continuing without it for the rest of this run").
    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        prefix: str = "trinity:",
        timeout: float = 0.5,
        breaker: RedisBreaker | None = None,
        clock: Callable[[], float] = time.perf_counter,
        purpose: str = "Redis",
        without: str = "continuing without it for the rest of this run",
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.prefix = prefix  # what the names of Trinity's keys begin with
        self.timeout = timeout
        self.breaker = breaker or RedisBreaker()
        self.clock = clock
        self.purpose = purpose
        self.without = without
        self._password = password
        self._sync: redis.Redis | None = None
        self._async: redis.asyncio.Redis | None = None
        # Seconds spent in calls that failed: what an outage cost the build.
        self.failed_calls = 0
        self.time_lost = 0.0

    @classmethod
    def from_settings(cls, settings: RedisTierSettings, **options: Any) -> RedisLink:
        """A link to the Redis that `cache.redis` names (`options` as for the class)."""
        return cls(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            password=settings.password,
            prefix=settings.prefix,
            timeout=settings.timeout,
            **options,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"

    @property
    def up(self) -> bool:
        """False once a call failed (until the breaker lets calls through again)."""
        return not self.breaker.is_open

    def client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis(**self._options(), retry=Retry(NoBackoff(), 0))
        return self._sync

    def async_client(self) -> redis.asyncio.Redis:
        if self._async is None:
            self._async = redis.asyncio.Redis(**self._options(), retry=AsyncRetry(NoBackoff(), 0))
        return self._async

    def run(self, command: Callable[[redis.Redis], Any], default: T) -> Any | T:
        """`command` on the sync client; `default` if Redis is down or fails now."""
        if self.breaker.is_open:
            return default
        started = self.clock()
        try:
            return command(self.client())
        except FAILURES as exc:
            self.failed(exc, started)
            return default

    async def run_async(
        self, command: Callable[[redis.asyncio.Redis], Awaitable[Any]], default: T
    ) -> Any | T:
        """`command` on the asyncio client; `default` if Redis is down or fails now."""
        if self.breaker.is_open:
            return default
        started = self.clock()
        try:
            return await command(self.async_client())
        except FAILURES as exc:
            self.failed(exc, started)
            return default

    def failed(self, exc: BaseException, started: float) -> None:
        """Count a failed call (begun at `started` by `clock`); the first one warns."""
        self.failed_calls += 1
        self.time_lost += self.clock() - started
        if self.breaker.trip():
            log.warning(
                "%s at %s failed (%s); %s",
                self.purpose,
                self.address,
                one_line(exc),
                self.without,
            )

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        # An asyncio client belongs to its event loop: the next run makes its own.
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    def _options(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "password": self._password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }


__all__ = ["FAILURES", "RedisBreaker", "RedisLink"]
