"""A Lua script run on the shared Redis: how processes building at once change what they
share (rate limits, daily budgets) atomically, with no read-modify-write race.

Scripts read Redis's own clock (`redis.call('TIME')`), so machines whose clocks disagree
still agree on windows and days. A script is sent by its SHA1 (EVALSHA) and loaded the
first time the server does not know it; every call goes through the RedisLink, so a
Redis that is down or slow costs one short timeout, one warning, and then nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio

    from trinity.cache.redislink import RedisLink

# What a script answers when Redis is down (or fails now): no verdict, the caller decides.
NO_ANSWER = None

# Lua helpers every script begins with. Numbers go into Redis as integer strings
# (microseconds), never through Lua's tostring, which keeps only 14 digits.
PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function int(x)
  return string.format('%.0f', x)
end
-- A stored number, or nil when it is not one (anything read back is untrusted).
local function number(value)
  local n = tonumber(value)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
-- Remove a key of another type than `kind`: planted or left by another program.
local function expect(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= kind then redis.call('DEL', key) end
end
"""


class RedisScript:
    """One Lua script (PRELUDE and `body`), run on a RedisLink's asyncio client."""

    def __init__(self, body: str) -> None:
        self.source = PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    async def run(
        self, link: RedisLink, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """The script's answer; NO_ANSWER when Redis is down or failed now."""

        async def call(client: redis.asyncio.Redis) -> Any:
            import redis.exceptions

            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                await client.script_load(self.source)
                return await client.evalsha(self.sha, len(keys), *keys, *args)

        return await link.run_async(call, NO_ANSWER)


__all__ = ["NO_ANSWER", "PRELUDE", "RedisScript"]
