"""URLs as Trinity shows them: credentials in a URL never reach a screen, a log or a report.

`llm.api_url` (or LLM_API_URL) may carry a user name and password (`http://user:pw@host`)
or a key in its query (`?api_key=...`). Every message that names a server goes through
`shown_url`, and the log redactor applies the same patterns to every record, so a URL
quoted by a third-party library is masked too.
"""

from __future__ import annotations

import re

MASK = "***"

# The user-info of any URL in a text: everything between "scheme://" and the last "@"
# before the host's end, as urlsplit reads it (a password may itself hold an "@" or a
# quote). Masking too much of a text is harmless; masking too little is a leak.
USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)([^/\s?#]*)(?=@)")
# Names a query parameter carrying a credential has: key, api_key, token, access_token,
# secret, password, sig, signature, auth, credential (and their plurals).
_SECRET_PARAM_NAME = (
    r"[a-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth|credential)s?"
)
SECRET_PARAM = re.compile(r"(?i)([?&]" + _SECRET_PARAM_NAME + r"=)([^&#\s'\"<>]+)")

# Both patterns keep group 1 and mask group 2, the form of the log redactor's patterns.
URL_SECRET_PATTERNS = (USERINFO, SECRET_PARAM)
# Text without one of these cannot match a pattern above (checked on lower-cased text).
URL_SECRET_TRIGGERS = ("@", "key", "token", "secret", "pass", "pwd", "sig", "auth", "credential")


def mask_urls(text: str) -> str:
    """`text` with the user-info and key-like query values of every URL in it masked."""
    for pattern in URL_SECRET_PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return text


def shown_url(url: str) -> str:
    """A URL fit to show: `http://***@host/v1?api_key=***` for one that carries secrets."""
    return mask_urls(url)


__all__ = ["MASK", "URL_SECRET_PATTERNS", "URL_SECRET_TRIGGERS", "mask_urls", "shown_url"]
