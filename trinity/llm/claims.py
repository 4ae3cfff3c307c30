"""Claims: one model call per cache key across the processes that share a Redis.

A process that missed the cache claims the key before it asks a model: a short lock in
Redis (`SET name token NX PX ttl`, the name `<prefix>lock:<key>`). While its call runs, the
holder extends the claim every third of its TTL; when the answer is stored, it releases
the claim. Both go through Lua scripts that act only while the lock still holds the
holder's token, so a holder whose claim expired (a stalled loop) never extends or deletes
the claim of whoever took over (fencing).

Another process that finds the key claimed waits for the answer instead, holding nothing
of its own (no concurrency slot): it polls the cache's Redis tier (`look`), at first
every 20 ms, then less often. When the claim goes away with no answer (its holder's call
failed, or the holder died and its TTL ran out), the waiter claims the key and asks itself.

The token is 128 random bits, not an INCR of a counter: it costs no round trip, leaves no
counter under the prefix for `trinity cache clear` to delete (after which a counter would
hand out its numbers again), and a stale holder could not guess it. Uniqueness is all the
compare-and-delete needs: what the claim guards, storing an answer, is harmless twice
(each answer is a good one, and the last stored wins), so claims need no order.

Redis failures cost what the RedisLink's breaker says: one warning (the link's), and from
then on every call returns at once, so a claim is simply not taken and the process asks
itself, as it would without Redis. Nothing read back is trusted: a value planted under a
lock's name, of any type or TTL, is at worst a key we do not wait for.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio

from trinity.cache.namespaces import LOCKS
from trinity.logs import get_logger

if TYPE_CHECKING:
    from trinity.cache.redislink import RedisLink

log = get_logger(__name__)

T = TypeVar("T")

# How long a claim lives unless its holder extends it (at a third of it, so two missed
# heartbeats in a row still keep it). Short, because it is how long the others wait when
# a holder dies (a CI runner cancelled mid-call); long enough that an event loop held up
# for a few seconds (a big render, a slow disk) does not lose a claim and pay twice.
CLAIM_TTL = 15.0

# How often a waiter looks for the holder's answer: after 20 ms at first (a short call's
# answer is there by then), each wait 1.5 times the last, and at most every 500 ms, so a
# waiter on a 10 s call costs Redis about 30 reads, and an answer reaches it within 0.5 s.
FIRST_POLL = 0.02
LAST_POLL = 0.5
POLL_GROWTH = 1.5

# Extend or delete the lock only while it holds our token. `pcall`: a value of another
# type planted under the name reads as not ours, where `call` would fail the script.
_EXTEND = """
if redis.pcall('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.pcall('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# PTTL's answers for a key with no expiry and for a missing key.
_NO_EXPIRY = -1
_MISSING = -2


class Outcome(enum.Enum):
    """Why a process did not get, or stopped waiting on, a claim."""

    HELD = "claimed by another process"
    GONE = "released or expired without an answer"
    UNREACHABLE = "Redis is out of reach"
    FOREIGN = "not a claim Trinity makes (no TTL, or a longer one than a claim's)"


@dataclass(frozen=True)
class Claim:
    """A claim this process holds: on a cache key, the lock's name in Redis and our
    token in it."""

    key: str
    name: str
    token: str


class Claims:
    """Claims on cache keys in the Redis of `link`, living `ttl` seconds unless extended.

    `sleep` paces the heartbeat and the waiters' polls (the client's, so tests can drive
    it). Every process sharing the Redis must use the same `ttl` (the default; tests make
    it short): a lock with a longer TTL than ours is taken for a foreign one.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl: float = CLAIM_TTL,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.link = link
        self.ttl = ttl
        self.sleep = sleep
        self.waiting = 0  # keys this process waits on now for another's call

    @property
    def ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    def name(self, key: str) -> str:
        """The lock's name in Redis for a cache key."""
        return f"{self.link.prefix}{LOCKS}{key}"

    async def once(
        self,
        key: str,
        *,
        ask: Callable[[], Awaitable[T]],
        look: Callable[[], Awaitable[T | None]],
        accept: Callable[[T], bool],
    ) -> tuple[T, bool]:
        """What `ask()` returns, asked by one process at a time for `key`, and whether it
        came from another process.

        Ours is asked while we hold the key's claim. Another's is what `look()` finds (in
        the shared cache) while we wait on its claim, if `accept` takes it; if it does not,
        or the claim is foreign, or Redis is out of reach, we ask ourselves, unclaimed.
        """
        while True:
            taken = await self.take(key)
            if isinstance(taken, Claim):
                return await self._ask_holding(taken, ask), False
            if taken is Outcome.UNREACHABLE:
                return await ask(), False
            found = await self._wait(key, look)
            if found is Outcome.GONE:
                _log(key, "llm_claim_takeover", "the call it waited on ended without an answer")
                continue  # its holder failed or died: claim the key ourselves
            if isinstance(found, Outcome):
                if found is Outcome.FOREIGN:
                    _log(key, "llm_claim_foreign", "its lock is not one Trinity makes")
                return await ask(), False
            if not accept(found):
                return await ask(), False
            return found, True

    async def take(self, key: str) -> Claim | Outcome:
        """Our new claim on `key`, or why there is none (HELD, UNREACHABLE)."""
        claim = Claim(key, self.name(key), secrets.token_hex(16))
        taken = await self.link.run_async(
            lambda r: r.set(claim.name, claim.token, nx=True, px=self.ttl_ms), Outcome.UNREACHABLE
        )
        if taken is Outcome.UNREACHABLE:
            return Outcome.UNREACHABLE
        return claim if taken else Outcome.HELD

    async def extend(self, claim: Claim) -> bool:
        """Give `claim` its full TTL again; False if it is no longer ours (or Redis failed)."""
        extended = await self.link.run_async(
            lambda r: r.eval(_EXTEND, 1, claim.name, claim.token, self.ttl_ms), 0
        )
        return extended == 1

    async def release(self, claim: Claim) -> bool:
        """Delete `claim` if it is still ours; False if another holds the key now."""
        released = await self.link.run_async(
            lambda r: r.eval(_RELEASE, 1, claim.name, claim.token), 0
        )
        return released == 1

    async def _ask_holding(self, claim: Claim, ask: Callable[[], Awaitable[T]]) -> T:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_alive, claim)
                try:
                    return await ask()
                except Exception as exc:
                    failure = exc  # raised below: a task group would wrap it in a group
                finally:
                    group.cancel_scope.cancel()
            raise failure
        finally:
            # Even when cancelled (Ctrl-C): the others need not wait out the TTL.
            with anyio.CancelScope(shield=True):
                await self.release(claim)

    async def _keep_alive(self, claim: Claim) -> None:
        """Extend `claim` every third of its TTL until cancelled, or until it is lost."""
        while True:
            await self.sleep(self.ttl / 3)
            if not await self.extend(claim):
                if self.link.up:
                    _log(claim.key, "llm_claim_lost", "its claim was lost while the call ran")
                return

    async def _wait(self, key: str, look: Callable[[], Awaitable[T | None]]) -> T | Outcome:
        """The answer of the process that holds `key`'s claim, or why there is none."""
        name = self.name(key)
        interval = FIRST_POLL
        self.waiting += 1
        try:
            _log(key, "llm_claim_wait", "another process is asking for it; waiting for its answer")
            while True:
                left = await self.link.run_async(lambda r: r.pttl(name), None)
                if not isinstance(left, int):
                    return Outcome.UNREACHABLE
                if left == _MISSING:
                    # The holder stores its answer before it releases: look once more.
                    found = await look()
                    return Outcome.GONE if found is None else found
                if left == _NO_EXPIRY or left > self.ttl_ms:
                    return Outcome.FOREIGN
                await self.sleep(interval)
                found = await look()
                if found is not None:
                    return found
                interval = min(interval * POLL_GROWTH, LAST_POLL)
        finally:
            self.waiting -= 1


def _log(key: str, event: str, what: str) -> None:
    """One line about the request for `key` (its first 12 characters; never its prompt)."""
    log.info("request %s: %s", key[:12], what, extra={"event": event, "request": key[:12]})


__all__ = ["CLAIM_TTL", "Claim", "Claims", "Outcome"]
