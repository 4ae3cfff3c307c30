"""Daily budgets (`llm.budget`, and `daily_tokens`/`daily_cost` of a key): tokens and USD
per UTC day, shared by every build that counts in the same scope.

A call reserves its estimate (input and output tokens, and their cost) in the project's
scope and its key's before it is sent, and settles to the real usage after, as
`--max-cost` does for one build (trinity.llm.pricing.CostBudget), so ten runners
building at once share one daily cap rather than each spending it. A scope is the
project's (`llm.budget.scope`, by default the site's title) or one key's (its endpoint
and a hash of its secret, as the shared rate limits name it).

Where the day's counts live:

- in Redis, when the build shares one (cache tier `redis`): a hash per scope and UTC day
  (by Redis's clock), changed only by Lua scripts, expiring after two days;
- else (or once Redis failed) in a small JSON ledger in the disk cache folder
  (`<cache.disk.dir>/budget/YYYY-MM-DD.json`), changed under an OS file lock and written
  atomically, so successive builds on one machine share the day;
- else in this process's memory only.

Everything read back (a Redis field, the ledger) is untrusted: a value that is not a
count is ignored, and a ledger that cannot be read starts again from what this process
counted, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.cache.namespaces import BUDGETS
from trinity.errors import BudgetExceeded
from trinity.llm.pricing import over_budget
from trinity.llm.redisscript import NO_ANSWER, RedisScript
from trinity.logs import get_logger
from trinity.messages import one_line, shown_path

try:
    import fcntl
except ImportError:  # Windows: no flock; the ledger is then shared without a lock
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from trinity.cache.redislink import RedisLink

log = get_logger(__name__)

# How long Redis keeps a day's counts: long enough for a build that runs past midnight.
RETENTION = 2 * 24 * 3600
# The ledger folder's files: one a UTC day.
_LEDGER_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json$")
# A ledger larger than this was not written by Trinity (it holds a few scopes).
_LEDGER_MAX_BYTES = 1024 * 1024
# Float slack when comparing costs (as CostBudget allows).
_COST_SLACK = 1e-12


@dataclass(frozen=True)
class BudgetSettings:
    """`llm.budget`: the project's caps per UTC day (None: no cap), the scope builds share
    them in (config names it after the site's title when the file does not), and where the
    day's ledger is kept without Redis (the disk cache folder's `budget/`; None: memory)."""

    daily_tokens: int | None = None
    daily_cost: float | None = None
    scope: str = ""
    ledger: Path | None = None


@dataclass(frozen=True)
class Scope:
    """What a cap counts: its name (in Redis and the ledger), how messages name it, its caps
    and the setting that holds them."""

    name: str
    shown: str
    tokens: int | None
    cost: float | None
    setting: str

    @property
    def capped(self) -> bool:
        return self.tokens is not None or self.cost is not None


def project_scope(settings: BudgetSettings) -> Scope:
    return Scope(
        f"project:{settings.scope}",
        f"project '{settings.scope}'",
        settings.daily_tokens,
        settings.daily_cost,
        "llm.budget",
    )


def key_scope(identity: str, variable: str, tokens: int | None, cost: float | None) -> Scope:
    return Scope(f"key:{identity}", f"key {variable}", tokens, cost, "llm.api_keys")


@dataclass
class Refusal:
    """A scope whose cap a call would pass, and what it had used today."""

    scope: Scope
    used_tokens: float
    used_cost: float
    tokens: int
    cost: float

    def error(self) -> BudgetExceeded:
        scope = self.scope
        today = "used today (UTC, spent or held by calls in flight)"
        if scope.tokens is not None and self.used_tokens + self.tokens > scope.tokens:
            message = over_budget(
                f"the daily token budget of {scope.tokens} tokens for {scope.shown} "
                f"({scope.setting} daily_tokens)",
                f"{self.used_tokens:.0f} {today}",
                f"{self.tokens} tokens",
            )
            return BudgetExceeded(message, spent=self.used_tokens, limit=scope.tokens)
        limit = scope.cost or 0.0
        message = over_budget(
            f"the daily cost budget of ${limit:.4f} for {scope.shown} ({scope.setting} daily_cost)",
            f"${self.used_cost:.4f} {today}",
            f"${self.cost:.4f}",
        )
        return BudgetExceeded(message, spent=self.used_cost, limit=limit)


class Hold:
    """The estimate one call holds in its scopes until it is settled (once)."""

    def __init__(self, store: str, day: str, scopes: Sequence[Scope], tokens: int, cost: float):
        self.store = store
        self.day = day
        self.scopes = tuple(scopes)
        self.tokens = tokens
        self.cost = cost
        self.settled = False

    def __repr__(self) -> str:
        return f"Hold({self.store}, {self.day}, tokens={self.tokens}, cost={self.cost})"


# --------------------------------------------------------------------------- Redis

_COUNTERS = """
local function civil_date(days)  -- days since 1970-01-01 -> YYYY-MM-DD (H. Hinnant)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end
-- A day's count; a field that is not a finite number is reset (it was not ours).
local function counter(key, field)
  local v = number(redis.call('HGET', key, field))
  if v == nil then
    redis.call('HSET', key, field, 0)
    return 0
  end
  return math.max(v, 0)
end
local function add(key, tokens, cost, ttl)
  local function count(field, amount)
    local sum = math.max(counter(key, field) + amount, 0)
    redis.call('HSET', key, field, string.format('%.17g', sum))
  end
  count('tokens', tokens)
  count('cost', cost)
  redis.call('PEXPIRE', key, ttl)
end
"""

# KEYS: a base name a scope (the day is added here, from Redis's clock).
# ARGV: tokens, cost, ttl ms, then a token cap and a cost cap a scope ('' for none).
_RESERVE = RedisScript(
    _COUNTERS
    + """
local day = civil_date(math.floor(now_us() / 86400000000))
local tokens, cost, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i, base in ipairs(KEYS) do
  local key = base .. ':' .. day
  expect(key, 'hash')
  local used_tokens, used_cost = counter(key, 'tokens'), counter(key, 'cost')
  redis.call('PEXPIRE', key, ttl)  -- counter() may have written to it
  local cap_tokens, cap_cost = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if (cap_tokens ~= nil and used_tokens + tokens > cap_tokens)
      or (cap_cost ~= nil and used_cost + cost > cap_cost + 1e-12) then
    return {i, day, string.format('%.17g', used_tokens), string.format('%.17g', used_cost)}
  end
end
for _, base in ipairs(KEYS) do add(base .. ':' .. day, tokens, cost, ttl) end
return {0, day}
"""
)

# KEYS: a base name a scope. ARGV: the day, tokens, cost (either may be negative), ttl ms.
_ADJUST = RedisScript(
    _COUNTERS
    + """
for _, base in ipairs(KEYS) do
  local key = base .. ':' .. ARGV[1]
  expect(key, 'hash')
  add(key, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
end
return 1
"""
)


class _RedisCounters:
    """The day's counts in Redis; every answer may be None (Redis gave none)."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def _base(self, scope: Scope) -> str:
        return f"{self.link.prefix}{BUDGETS}{scope.name}"

    async def reserve(
        self, scopes: Sequence[Scope], tokens: int, cost: float
    ) -> tuple[str, Refusal | None] | None:
        caps: list[str | int | float] = []
        for scope in scopes:
            caps += [_arg(scope.tokens), _arg(scope.cost)]
        answer = await _RESERVE.run(
            self.link,
            [self._base(scope) for scope in scopes],
            [tokens, repr(cost), RETENTION * 1000, *caps],
        )
        return _reserve_answer(answer, scopes, tokens, cost)

    async def adjust(self, hold: Hold, tokens: float, cost: float) -> None:
        await _ADJUST.run(
            self.link,
            [self._base(scope) for scope in hold.scopes],
            [hold.day, repr(float(tokens)), repr(float(cost)), RETENTION * 1000],
        )


def _arg(cap: float | None) -> str:
    return "" if cap is None else repr(cap)


def _reserve_answer(
    answer: Any, scopes: Sequence[Scope], tokens: int, cost: float
) -> tuple[str, Refusal | None] | None:
    """(day, refusal or None) from the reserve script; None for no (readable) answer."""
    if answer is NO_ANSWER or not isinstance(answer, list) or len(answer) < 2:
        return None
    index, day = answer[0], _text(answer[1])
    if index == 0:
        return day, None
    if not isinstance(index, int) or not 1 <= index <= len(scopes) or len(answer) != 4:
        return None
    used_tokens, used_cost = _finite(_text(answer[2])), _finite(_text(answer[3]))
    return day, Refusal(scopes[index - 1], used_tokens, used_cost, tokens, cost)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _finite(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


# --------------------------------------------------------------------------- local

Counts = dict[str, list[float]]  # scope name -> [tokens, cost]


def _admit(counts: Counts, scopes: Sequence[Scope], tokens: float, cost: float) -> Refusal | None:
    for scope in scopes:
        used_tokens, used_cost = counts.get(scope.name, [0.0, 0.0])
        over_tokens = scope.tokens is not None and used_tokens + tokens > scope.tokens
        over_cost = scope.cost is not None and used_cost + cost > scope.cost + _COST_SLACK
        if over_tokens or over_cost:
            return Refusal(scope, used_tokens, used_cost, round(tokens), cost)
    return None


def _add(counts: Counts, scopes: Sequence[Scope], tokens: float, cost: float) -> None:
    for scope in scopes:
        entry = counts.setdefault(scope.name, [0.0, 0.0])
        entry[0] = max(0.0, entry[0] + tokens)
        entry[1] = max(0.0, entry[1] + cost)


class _LocalCounters:
    """The day's counts in the ledger folder (None: this process's memory only)."""

    def __init__(self, directory: Path | None, wall_clock: Callable[[], float]) -> None:
        self.directory = directory
        self.wall_clock = wall_clock
        self._own: dict[str, Counts] = {}  # what this process counted, by day
        self._pruned = False

    def today(self) -> str:
        return datetime.fromtimestamp(self.wall_clock(), UTC).date().isoformat()

    def reserve(
        self, scopes: Sequence[Scope], tokens: int, cost: float
    ) -> tuple[str, Refusal | None]:
        day = self.today()
        return day, self._change(day, scopes, tokens, cost, check=True)

    def adjust(self, hold: Hold, tokens: float, cost: float) -> None:
        self._change(hold.day, hold.scopes, tokens, cost, check=False)

    def _change(
        self, day: str, scopes: Sequence[Scope], tokens: float, cost: float, *, check: bool
    ) -> Refusal | None:
        """Count `tokens` and `cost` in the day's scopes, unless `check` finds that a cap
        would be passed (the Refusal): in the ledger, under its lock, and in what this
        process counted; in the latter only when there is no ledger (or it failed)."""
        own = self._own.setdefault(day, {})
        if self.directory is not None:
            try:
                with self._locked():
                    counts = self._read(day, own)
                    refusal = _admit(counts, scopes, tokens, cost) if check else None
                    if refusal is None:
                        _add(counts, scopes, tokens, cost)
                        self._write(day, counts)
            except OSError as exc:
                log.warning(
                    "the daily budget ledger in %s failed (%s); this process counts the "
                    "day on its own for the rest of this run",
                    shown_path(self.directory),
                    one_line(exc),
                )
                self.directory = None
            else:
                if refusal is None:
                    _add(own, scopes, tokens, cost)
                return refusal
        refusal = _admit(own, scopes, tokens, cost) if check else None
        if refusal is None:
            _add(own, scopes, tokens, cost)
        return refusal

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.directory is not None
        # The cache folder (the parent) is private; a build may make it here first.
        self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a small write
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self, day: str, own: Counts) -> Counts:
        assert self.directory is not None
        path = self.directory / f"{day}.json"
        try:
            with path.open("rb") as file:
                raw = file.read(_LEDGER_MAX_BYTES + 1)
        except FileNotFoundError:
            return {name: list(entry) for name, entry in own.items()}
        counts = _parse_ledger(raw) if len(raw) <= _LEDGER_MAX_BYTES else None
        if counts is None:
            log.warning(
                "the daily budget ledger %s is not one Trinity wrote; starting the day again "
                "from what this process counted",
                shown_path(path),
            )
            return {name: list(entry) for name, entry in own.items()}
        return counts

    def _write(self, day: str, counts: Counts) -> None:
        assert self.directory is not None
        path = self.directory / f"{day}.json"
        temporary = self.directory / f".{day}.{os.getpid()}.tmp"
        data = {
            "day": day,
            "scopes": {k: {"tokens": v[0], "cost": v[1]} for k, v in counts.items()},
        }
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, sort_keys=True)
        temporary.replace(path)
        if not self._pruned:
            self._pruned = True
            self._prune(day)

    def _prune(self, day: str) -> None:
        """Remove the ledgers of days before yesterday: nothing reads them again."""
        assert self.directory is not None
        oldest = (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()
        for entry in os.scandir(self.directory):
            match = _LEDGER_NAME.match(entry.name)
            if match and match.group(1) < oldest:
                with contextlib.suppress(OSError):
                    Path(entry.path).unlink()


def _parse_ledger(raw: bytes) -> Counts | None:
    """A ledger's counts, or None when it is not a ledger Trinity wrote."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    scopes = data.get("scopes") if isinstance(data, dict) else None
    if not isinstance(scopes, dict):
        return None
    counts: Counts = {}
    for name, entry in scopes.items():
        if not isinstance(entry, dict):
            return None
        tokens, cost = _count_value(entry.get("tokens")), _count_value(entry.get("cost"))
        if tokens is None or cost is None:
            return None
        counts[str(name)] = [tokens, cost]
    return counts


def _count_value(value: Any) -> float | None:
    """A count read from the ledger: a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


# --------------------------------------------------------------------------- the front


class DailyBudgets:
    """The daily caps of one client: the project's scope, and each key's.

    With `link`, counts live in its Redis until it fails (its one warning says so); then,
    and without it, in the ledger folder, or memory when there is none.
    """

    def __init__(
        self,
        settings: BudgetSettings,
        link: RedisLink | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.project = project_scope(settings)
        self._redis = _RedisCounters(link) if link is not None else None
        self._local = _LocalCounters(settings.ledger, wall_clock)

    def __repr__(self) -> str:
        return f"DailyBudgets({self.project.shown})"

    def scopes(self, key: Scope | None = None) -> list[Scope]:
        """The capped scopes a call on `key` counts in: the project's, then the key's."""
        return [scope for scope in (self.project, key) if scope is not None and scope.capped]

    async def reserve(
        self, scopes: Sequence[Scope], tokens: int, cost: float
    ) -> Hold | Refusal | None:
        """Hold `tokens` and `cost` in every scope (a Hold), or none when one of them would
        pass its cap (the Refusal); None when no scope has a cap."""
        if not scopes:
            return None
        tokens, cost = max(0, tokens), max(0.0, cost)
        if self._redis is not None and self._redis.link.up:
            answer = await self._redis.reserve(scopes, tokens, cost)
            if answer is not None:
                return _hold_or_refusal("redis", answer, scopes, tokens, cost)
        answer = self._local.reserve(scopes, tokens, cost)
        return _hold_or_refusal("local", answer, scopes, tokens, cost)

    async def settle(self, hold: Hold | None, tokens: int, cost: float) -> None:
        """The call ended having used `tokens` and cost `cost` (0 and 0 if it was never
        answered): count that instead of its estimate, once."""
        if hold is None or hold.settled:
            return
        hold.settled = True
        tokens_delta = max(0, tokens) - hold.tokens
        cost_delta = max(0.0, cost) - hold.cost
        if tokens_delta == 0 and cost_delta == 0:
            return
        if hold.store == "redis" and self._redis is not None:
            await self._redis.adjust(hold, tokens_delta, cost_delta)
        else:
            self._local.adjust(hold, tokens_delta, cost_delta)


def _hold_or_refusal(
    store: str,
    answer: tuple[str, Refusal | None],
    scopes: Sequence[Scope],
    tokens: int,
    cost: float,
) -> Hold | Refusal:
    day, refusal = answer
    return refusal if refusal is not None else Hold(store, day, scopes, tokens, cost)


__all__ = [
    "RETENTION",
    "BudgetSettings",
    "DailyBudgets",
    "Hold",
    "Refusal",
    "Scope",
    "key_scope",
    "project_scope",
]
