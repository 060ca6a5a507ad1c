"""Errors users see: one clear sentence naming the file, row and field, never a traceback.

Raise :class:`CuratuneError` (or a subclass) for anything caused by the user's input or
environment; the CLI prints its message and exits with status 2. Bugs stay ordinary
exceptions so they keep their traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import Iterator


class CuratuneError(Exception):
    """A problem with the user's input, config or environment, explained in the message."""


class ConfigError(CuratuneError):
    pass


class DataError(CuratuneError):
    pass


class ModelError(CuratuneError):
    pass


class WriteError(CuratuneError):
    """A file could not be written or read because of the environment (permissions, a full
    disk, a file where a folder belongs), not because of a bug."""


#: errno values of OSErrors caused by the machine or the user's paths, not by curatune.
ENVIRONMENT_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EMFILE,
})

#: Errors after which every later write would fail the same way (stop, don't go on to the next cell).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})

_HINTS = {
    errno.ENOSPC: "the disk is full: free space (or choose another run_dir) and re-run the same command; "
                  "finished results are kept",
    errno.EDQUOT: "the disk quota is used up: free space and re-run the same command; finished results are kept",
    errno.EROFS: "the file system is read-only: choose a writable run_dir (--run-dir / --out)",
    errno.EACCES: "no permission: fix the folder's permissions or choose another run_dir (--run-dir / --out)",
    errno.EPERM: "not permitted: fix the folder's permissions or choose another run_dir (--run-dir / --out)",
    errno.ENOTDIR: "a file is in the way where a folder belongs: move it or choose another path",
    errno.EEXIST: "a file is in the way where a folder belongs: move it or choose another path",
    errno.EISDIR: "a folder is in the way where a file belongs: move it or choose another path",
    errno.EFBIG: "the file is larger than this file system (or `ulimit -f`) allows: write to another disk",
}

#: How Rust libraries report an OS error inside their own exception types: safetensors, which
#: writes every weights file, raises ``SafetensorError("... No space left on device (os error 28)")``.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or the one a Rust library names in its message."""
    if isinstance(exc, OSError):
        return exc
    found = _RUST_OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


def is_environment_error(exc: BaseException) -> bool:
    if isinstance(exc, WriteError):
        return True
    error = os_error_of(exc)
    return error is not None and error.errno in ENVIRONMENT_ERRNOS


def is_disk_error(exc: BaseException) -> bool:
    """A write failure that every later write would hit too (full disk, read-only file system)."""
    error = os_error_of(exc.__cause__ if isinstance(exc, WriteError) else exc)
    return error is not None and error.errno in DISK_ERRNOS


def environment_error(exc: BaseException, path: object = None, action: str = "write") -> WriteError:
    """One sentence for an OSError (or a library's error naming one): what could not be done to
    which path, why, and what to do."""
    error = os_error_of(exc) or exc
    where = path if path is not None else (getattr(error, "filename", None) or "a file")
    hint = _HINTS.get(getattr(error, "errno", None))
    reason = getattr(error, "strerror", None) or error
    return WriteError(f"cannot {action} {where}: {reason}" + (f" ({hint})" if hint else ""))


@contextlib.contextmanager
def disk_errors_named(path: object) -> Iterator[None]:
    """Inside the block, a write failure every later write would hit too (a full disk), whichever
    library raised it, becomes one WriteError naming ``path``; one already named passes as it is."""
    try:
        yield
    except WriteError:
        raise
    except Exception as exc:
        if not is_disk_error(exc):
            raise
        raise environment_error(exc, path) from exc
