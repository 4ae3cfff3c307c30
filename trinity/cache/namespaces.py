"""Where, after the prefix (`cache.redis.prefix`), the state that builds share through
Redis lives (trinity.llm): a request's lock (claims.py), a key's rate-limit windows
(sharedlimits.py), a day's budget (budgets.py).

None of it is a cached answer: the Redis tier's scans (`trinity cache stats`, `clear`,
`prune`) leave it alone, and all of it expires by itself. A module of its own, so that
naming a key imports no Redis client.
"""

from __future__ import annotations

LOCKS = "lock:"
LIMITS = "limits:"
BUDGETS = "budget:"
SHARED_NAMESPACES = (LOCKS, LIMITS, BUDGETS)

__all__ = ["BUDGETS", "LIMITS", "LOCKS", "SHARED_NAMESPACES"]
