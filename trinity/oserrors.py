"""A write the file system refused, in words: a ResourceError that says where, why and
what to do, and the system's reason for any OSError as a message phrase."""

from __future__ import annotations

import errno as errnos

from trinity.errors import ResourceError
from trinity.messages import one_line

_PERMISSION_FIX = (
    "let this user write to it and to the folder that holds it, or choose {instead}, and {again}"
)
# What the user can do about each refusal of a write; any other error gets _OTHER_FIX.
_RESOURCE_FIXES = {
    errnos.ENOSPC: "free some space and {again}",
    errnos.EDQUOT: "free some space or raise the disk quota, and {again}",
    errnos.EROFS: "choose {instead} on a writable file system and {again}",
    errnos.EACCES: _PERMISSION_FIX,
    errnos.EPERM: _PERMISSION_FIX,
}
_OTHER_FIX = "check the file system and {again}"


def resource_error(
    exc: OSError,
    folder: str,
    doing: str,
    *,
    instead: str = "another folder",
    again: str = "try again",
    after: str = "",
) -> ResourceError:
    """`exc` as one line: the `folder` at fault, the system's reason, what was being done,
    what to do (choose `instead`, then do it `again`), and what became of the old files."""
    fix = _RESOURCE_FIXES.get(exc.errno or 0, _OTHER_FIX).format(instead=instead, again=again)
    message = f"{folder}: {os_reason(exc)} while {doing}; {fix}"
    return ResourceError(f"{message}; {after}" if after else message, path=folder, errno=exc.errno)


def os_reason(exc: OSError) -> str:
    """What the system said about `exc`, as a message phrase: "no space left on device"."""
    reason = exc.strerror or one_line(exc)
    return reason[:1].lower() + reason[1:]
