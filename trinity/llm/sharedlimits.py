"""Rate limits shared through Redis by every process that builds against one provider.

Each process keeps its own limiter (trinity.llm.ratelimit) in front: it costs nothing and
needs no network when it already says wait. When it says go, the key's shared state in
Redis decides, in one atomic Lua script that reads Redis's clock: three sliding windows
(requests, input tokens, output tokens per `window`), the cooldown after a 429, and the
pacing learnt from rate-limit headers (nothing left until the reset the provider
announced). Four processes building at once thus send what one may, not four times it.

A key is known in Redis by its endpoint and a short hash of its secret, never the secret:
two machines with the same key share its limits, two keys under one variable name do
not; a server without keys is known by its URL. Every name begins with the link's
prefix (`trinity:limits:...`) and every key written expires.

When Redis goes away (its link's breaker opens, with one warning), every call here
answers "no verdict" at once and the local limits alone decide, for the rest of the run.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from trinity.cache.namespaces import LIMITS
from trinity.llm.redisscript import NO_ANSWER, RedisScript

if TYPE_CHECKING:
    from trinity.cache.redislink import RedisLink


class WindowLimits(Protocol):
    """A key's limits per window (trinity.llm.ratelimit.KeyLimits); None for no limit."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def input_tpm(self) -> int | None: ...
    @property
    def output_tpm(self) -> int | None: ...


# A request counts in a shared window a little longer than the window itself: one
# reserved at a window's end and one at the next window's start can reach the server in
# the other order (network jitter), and the server must never see more than the limit in
# any window of its own. 1% of a minute is 0.6 s, more than such reordering ever takes.
WINDOW_MARGIN = 0.01

# The longest wait a value read back from Redis may ask for (a cooldown, a pacing reset):
# a longer one was not written by Trinity, and is ignored and removed.
LONGEST_SHARED_WAIT = 24 * 3600.0

# The header pacing limits, with what a request of (input, output) tokens takes from each.
PACED_LIMITS = ("requests", "tokens", "input_tokens", "output_tokens")

_WINDOW = """
-- A sliding window is a sorted set of members "id:amount" scored by when they were
-- reserved (microseconds of Redis's clock), and beside it (key .. ':sum') the sum of
-- their amounts, so that a check costs O(log n) however many requests it holds. (The
-- sum's name is made here, not passed in KEYS: Trinity's Redis is never a cluster.)
local function amount_of(member)
  return number(string.match(member, ':(%d+)$')) or 0
end
-- The sum counted again from the members: when it was lost, or is not one we wrote.
local function recount(key)
  local sum = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    sum = sum + amount_of(member)
  end
  return sum
end
-- Drop the members that left the window (and any from the future: never ours), and
-- return the sum of those left.
local function window_sum(key, span, now)
  expect(key, 'zset')
  expect(key .. ':sum', 'string')
  local sum = number(redis.call('GET', key .. ':sum'))
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', int(now - span))
  local future = redis.call('ZRANGEBYSCORE', key, '(' .. int(now), '+inf')
  if sum ~= nil then
    for _, member in ipairs(old) do sum = sum - amount_of(member) end
    for _, member in ipairs(future) do sum = sum - amount_of(member) end
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - span)) end
  if #future > 0 then redis.call('ZREMRANGEBYSCORE', key, '(' .. int(now), '+inf') end
  if redis.call('ZCARD', key) == 0 then
    redis.call('DEL', key .. ':sum')
    return 0
  end
  if sum == nil or sum < 0 or sum ~= math.floor(sum) then sum = recount(key) end
  if #old > 0 or #future > 0 then
    -- Kept at once: a check that then refuses writes nothing else, and a sum still
    -- holding the members just dropped would refuse every request after it (for as
    -- long as the window the members it still counts were in). PTTL, not KEEPTTL:
    -- Redis 5 has no KEEPTTL.
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then
      redis.call('SET', key .. ':sum', int(sum), 'PX', ttl)
    else
      redis.call('DEL', key .. ':sum')
    end
  end
  return sum
end
-- Microseconds until `amount` fits under `limit` in the window; 0 if it fits now.
local function window_wait(key, limit, amount, span, now)
  if limit <= 0 then return 0 end
  local used = window_sum(key, span, now)
  amount = math.min(amount, limit)  -- too big: wait for an empty window, not forever
  local excess = used + amount - limit
  if excess <= 0 then return 0 end
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do  -- oldest first: until enough of them have left
    excess = excess - amount_of(entries[i])
    if excess <= 0 then return number(entries[i + 1]) + span - now end
  end
  -- The sum said more than the members hold: it was not ours. Count them again.
  redis.call('DEL', key .. ':sum')
  return window_wait(key, limit, amount, span, now)
end
local function window_add(key, limit, amount, span, now, id, ttl)
  if limit <= 0 then return end
  local sum = window_sum(key, span, now)
  redis.call('ZADD', key, int(now), id .. ':' .. int(amount))
  redis.call('SET', key .. ':sum', int(sum + amount), 'PX', ttl)
  redis.call('PEXPIRE', key, ttl)
end
"""

# KEYS: requests, input, output windows; cooldown; pacing hash.
# ARGV: span us, rpm, input limit, input amount, output limit, output amount, member id,
# longest trusted wait us, ttl ms (limits of 0: none).
_RESERVE = RedisScript(
    _WINDOW
    + """
local now = now_us()
local span, trust = tonumber(ARGV[1]), tonumber(ARGV[8])
local rpm, in_limit, in_amount = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out_limit, out_amount, id = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local wait = 0
expect(KEYS[4], 'string')
local cooled = number(redis.call('GET', KEYS[4]))
if cooled ~= nil and cooled - now > trust then
  redis.call('DEL', KEYS[4])
elseif cooled ~= nil then
  wait = math.max(wait, cooled - now)
end
expect(KEYS[5], 'hash')
local needs = {requests = 1, tokens = in_amount + out_amount,
               input_tokens = in_amount, output_tokens = out_amount}
local paced = {}
for name, need in pairs(needs) do
  local left = number(redis.call('HGET', KEYS[5], name .. '.remaining'))
  local reset = number(redis.call('HGET', KEYS[5], name .. '.reset'))
  if left ~= nil and reset ~= nil and reset > now then
    if reset - now > trust then
      redis.call('HDEL', KEYS[5], name .. '.remaining', name .. '.reset')
    else
      paced[name] = need
      if left <= 0 or left < need then wait = math.max(wait, reset - now) end
    end
  end
end
wait = math.max(wait, window_wait(KEYS[1], rpm, 1, span, now))
wait = math.max(wait, window_wait(KEYS[2], in_limit, in_amount, span, now))
wait = math.max(wait, window_wait(KEYS[3], out_limit, out_amount, span, now))
if wait > 0 then return {0, math.ceil(wait)} end
local ttl = tonumber(ARGV[9])
window_add(KEYS[1], rpm, 1, span, now, id, ttl)
window_add(KEYS[2], in_limit, in_amount, span, now, id, ttl)
window_add(KEYS[3], out_limit, out_amount, span, now, id, ttl)
for name, need in pairs(paced) do
  redis.call('HINCRBYFLOAT', KEYS[5], name .. '.remaining', -need)
end
return {1, 0}
"""
)

# KEYS: input, output windows. ARGV: member id, old input, new input, old output, new
# output, ttl ms (set again: removing a window's only member removes the key).
_RECONCILE = RedisScript(
    """
local function fix(key, old, new)
  expect(key, 'zset')
  local member = ARGV[1] .. ':' .. old
  local score = redis.call('ZSCORE', key, member)
  if score then
    redis.call('ZREM', key, member)
    redis.call('ZADD', key, score, ARGV[1] .. ':' .. new)
    redis.call('PEXPIRE', key, ARGV[6])
    expect(key .. ':sum', 'string')
    local sum = number(redis.call('GET', key .. ':sum'))
    if sum ~= nil then  -- else the next check counts it again
      local fixed = math.max(sum + tonumber(new) - tonumber(old), 0)
      redis.call('SET', key .. ':sum', int(fixed), 'PX', ARGV[6])
    end
  end
end
fix(KEYS[1], ARGV[2], ARGV[3])
fix(KEYS[2], ARGV[4], ARGV[5])
return 1
"""
)

# KEYS: cooldown. ARGV: milliseconds. Never shortens a cooldown already set.
_COOL_DOWN = RedisScript(
    """
local now, ms = now_us(), tonumber(ARGV[1])
local until_us = now + ms * 1000
expect(KEYS[1], 'string')
local current = number(redis.call('GET', KEYS[1]))
if current ~= nil and current >= until_us and current - now <= ms * 1000 then return 0 end
redis.call('SET', KEYS[1], int(until_us), 'PX', ms)
return 1
"""
)

# KEYS: pacing hash. ARGV: (limit name, remaining, milliseconds until its reset) ...
_PACE = RedisScript(
    """
local now = now_us()
expect(KEYS[1], 'hash')
local longest = 1000
for i = 1, #ARGV, 3 do
  local ms = tonumber(ARGV[i + 2])
  redis.call('HSET', KEYS[1], ARGV[i] .. '.remaining', ARGV[i + 1],
             ARGV[i] .. '.reset', int(now + ms * 1000))
  longest = math.max(longest, ms)
end
local left = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.max(left, longest + 1000))
return 1
"""
)


def key_identity(endpoint: str, secret: str | None) -> str:
    """What a key is called in Redis: its endpoint (a URL without credentials) and a short
    hash of its secret, so the secret itself is never written anywhere."""
    if secret is None:
        return endpoint
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]
    return f"{endpoint} key:{digest}"


class SharedLimits:
    """The shared state of every key a client uses, in the Redis of `link`."""

    def __init__(self, link: RedisLink, *, window: float = 60.0) -> None:
        self.link = link
        self.window = window
        # Microseconds an entry counts in a shared window: the window and its margin.
        self.span = math.ceil(window * (1 + WINDOW_MARGIN) * 1_000_000)
        # Milliseconds a window's key outlives its newest entry.
        self.ttl = math.ceil(self.span / 1000) + 1000

    def __repr__(self) -> str:
        return f"SharedLimits({self.link.address}, window={self.window})"

    def key(self, identity: str, limits: WindowLimits) -> SharedKey:
        return SharedKey(self, identity, limits)


class SharedReservation:
    """What one request reserved in Redis; `reconcile` corrects it to the real usage."""

    def __init__(self, key: SharedKey, member: str, input_tokens: int, output_tokens: int):
        self.key = key
        self.member = member
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens

    def __repr__(self) -> str:
        return f"SharedReservation({self.input_tokens}, {self.output_tokens})"

    async def reconcile(self, input_tokens: int, output_tokens: int) -> None:
        """Set the reserved tokens to what the request used, in every process's view."""
        input_tokens, output_tokens = max(0, input_tokens), max(0, output_tokens)
        key = self.key
        await _RECONCILE.run(
            key.shared.link,
            [key.names["input"], key.names["output"]],
            [
                self.member,
                self.input_tokens,
                input_tokens,
                self.output_tokens,
                output_tokens,
                key.shared.ttl,
            ],
        )
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


class SharedKey:
    """One key's (or keyless server's) limits as every process sees them."""

    def __init__(self, shared: SharedLimits, identity: str, limits: WindowLimits) -> None:
        self.shared = shared
        self.limits = limits
        base = f"{shared.link.prefix}{LIMITS}{identity}"
        self.names = {
            part: f"{base}:{part}" for part in ("requests", "input", "output", "cooldown", "pacing")
        }

    def __repr__(self) -> str:
        return f"SharedKey({self.limits!r})"

    async def reserve(
        self, input_est: int, output_est: int
    ) -> tuple[float, SharedReservation | None]:
        """(0, reservation) when a request of this size may be sent now and was counted;
        (seconds, None) when it must wait that long; (0, None) when Redis gave no verdict
        (down: the local limits decide)."""
        member = uuid.uuid4().hex[:16]
        limits = self.limits
        answer = await _RESERVE.run(
            self.shared.link,
            [self.names[part] for part in ("requests", "input", "output", "cooldown", "pacing")],
            [
                self.shared.span,
                limits.rpm or 0,
                limits.input_tpm or 0,
                max(0, input_est),
                limits.output_tpm or 0,
                max(0, output_est),
                member,
                int(LONGEST_SHARED_WAIT * 1_000_000),
                self.shared.ttl,
            ],
        )
        wait = verdict(answer)
        if wait is None:
            return 0.0, None
        if wait > 0:
            return wait, None
        return 0.0, SharedReservation(self, member, max(0, input_est), max(0, output_est))

    async def cool_down(self, seconds: float) -> None:
        """Nobody sends on this key for `seconds` (after a 429); never shortens a cooldown."""
        millis = math.ceil(min(max(0.0, seconds), LONGEST_SHARED_WAIT) * 1000)
        if millis > 0:
            await _COOL_DOWN.run(self.shared.link, [self.names["cooldown"]], [millis])

    async def pace(self, found: Mapping[str, tuple[float, float]]) -> None:
        """Share what the provider's headers said: `found` maps a limit of PACED_LIMITS to
        (remaining, seconds until its reset)."""
        args: list[str | int | float] = []
        for name, (remaining, reset) in found.items():
            if name in PACED_LIMITS and math.isfinite(remaining):
                millis = math.ceil(min(max(0.0, reset), LONGEST_SHARED_WAIT) * 1000)
                args += [name, repr(float(remaining)), millis]
        if args:
            await _PACE.run(self.shared.link, [self.names["pacing"]], args)


def verdict(answer: object) -> float | None:
    """Seconds to wait (0: granted) from the reserve script's answer; None for none."""
    if answer is NO_ANSWER or not isinstance(answer, list) or len(answer) != 2:
        return None
    granted, wait = answer
    if granted == 1:
        return 0.0
    if not isinstance(wait, int) or wait < 0:
        return None
    return max(wait / 1_000_000, 1e-6)


__all__ = [
    "LONGEST_SHARED_WAIT",
    "PACED_LIMITS",
    "WINDOW_MARGIN",
    "SharedKey",
    "SharedLimits",
    "SharedReservation",
    "key_identity",
    "verdict",
]
