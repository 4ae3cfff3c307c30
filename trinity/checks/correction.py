"""What a chat model is told when its answer failed its checks: the user turn that follows
its answer, each failed check said plainly, one a line, then what to do.

Every failure's message is written to follow "Your answer" ("does not mention 'Python'",
"ends mid-sentence: '...'"), except the counts of `words` and `chars` ("212 words; at most
120"), which are said in full: "Your answer has 212 words; at most 120 are allowed."
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from trinity.checks.spec import CheckFailure

_COUNT = re.compile(r"(\d+ \w+); at (most|least) (\d+)")
_ASK = "Write the answer again, following these rules. Reply with the answer only."


def correction(failures: Sequence[CheckFailure]) -> str:
    """The user turn that follows a failed answer: each failed check, plainly."""
    return "\n".join([*(_told(failure) for failure in failures), _ASK])


def _told(failure: CheckFailure) -> str:
    count = _COUNT.fullmatch(failure.message)
    if count is not None:
        have, bound, limit = count.groups()
        allowed = "allowed" if bound == "most" else "needed"
        return f"Your answer has {have}; at {bound} {limit} are {allowed}."
    if failure.check in _SAID_OF_THE_ANSWER:
        return f"Your answer {failure.message}."
    # A check this module does not know (a judge's verdict): its name, then its message.
    return f"{failure}."


# "layout" is the layout guardian's: what a browser found wrong with the answer on its page.
_SAID_OF_THE_ANSWER = frozenset(
    {"complete", "mentions", "forbid", "links", "pii", "repeats", "layout"}
)


__all__ = ["correction"]
