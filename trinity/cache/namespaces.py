"""Where, after the prefix (`cache.redis.prefix`), the state that builds share through
Redis lives (trinity.llm): a request's lock (claims.py), a key's rate-limit windows
(sharedlimits.py), a day's budget (budgets.py), the semantic cache's prompt vectors
(vectors.py: they point at answers, and are no answer themselves).

None of it is a cached answer: the Redis tier's scans (`trinity cache stats`, `clear`,
`prune`) leave it alone, and all of it expires by itself. A module of its own, so that
naming a key imports no Redis client.
"""

from __future__ import annotations

LOCKS = "lock:"
LIMITS = "limits:"
BUDGETS = "budget:"
SEMANTIC = "semantic:"
SHARED_NAMESPACES = (LOCKS, LIMITS, BUDGETS, SEMANTIC)

__all__ = ["BUDGETS", "LIMITS", "LOCKS", "SEMANTIC", "SHARED_NAMESPACES"]
