"""A write the file system refused, as one ResourceError that says where, why and what to do."""

from __future__ import annotations

import errno

import pytest

from trinity.errors import EXIT_BUILD_FAILED
from trinity.oserrors import resource_error


@pytest.mark.parametrize(
    ("number", "reason", "fix"),
    [
        (errno.ENOSPC, "no space left on device", "free some space and build again"),
        (
            errno.EDQUOT,
            "disk quota exceeded",
            "free some space or raise the disk quota, and build again",
        ),
        (
            errno.EROFS,
            "read-only file system",
            "choose another output folder on a writable file system and build again",
        ),
        (
            errno.EACCES,
            "permission denied",
            "let this user write to it and to the folder that holds it, or choose another "
            "output folder, and build again",
        ),
        (
            errno.EPERM,
            "operation not permitted",
            "let this user write to it and to the folder that holds it, or choose another "
            "output folder, and build again",
        ),
        (errno.EIO, "input/output error", "check the file system and build again"),
    ],
)
def test_resource_error_says_what_happened_where_and_what_to_do(
    number: int, reason: str, fix: str
) -> None:
    exc = OSError(number, errno.errorcode[number], "/somewhere/output/x.html")
    exc.strerror = reason[:1].upper() + reason[1:]  # as the system words it

    error = resource_error(
        exc,
        "output/",
        "writing x.html",
        instead="another output folder",
        again="build again",
        after="the previous site was left as it was",
    )

    assert str(error) == (
        f"output/: {reason} while writing x.html; {fix}; the previous site was left as it was"
    )
    assert (error.path, error.errno, error.exit_code) == ("output/", number, EXIT_BUILD_FAILED)


def test_resource_error_without_an_aftermath_or_a_reason() -> None:
    error = resource_error(OSError("no details"), ".cache/", "taking the lock .lock")
    assert str(error) == (
        ".cache/: no details while taking the lock .lock; check the file system and try again"
    )
    assert error.errno is None
