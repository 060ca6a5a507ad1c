"""One process per stage on a run directory, and no litter from killed writers.

Two ``curatune sweep`` processes on one run directory delete each other's files (cells end
with both done.json and failed.json, logs hold every step twice). Each stage therefore holds
an OS lock, ``fcntl.flock`` on ``RUN_DIR/.lock-<stage>``, while it runs:

* the OS releases it when the process ends, however it ends (kill -9 included), so a stale
  lock never needs clearing by hand;
* a second process of the same stage does not wait: it exits (status 2) naming who holds
  the lock: pid, host, command and since when (written into the lock file by the holder).

Why one lock per stage and not per cell: cells share the plan, the subsets and the
summary, and a second process that skipped locked cells would report them as not done;
an exclusive stage lock is simple and clearly correct. To train cells in parallel, use
the Ray executor (``train.executor: ray``), which runs them from one process. Different
stages (curate, train, eval) hold different locks, as before.

``flock`` works on local file systems; on NFS it is emulated with POSIX locks (Linux
2.6.12+), which also hold across hosts.

Temp files: :func:`curatune.rundir.atomic_path` names its temp files
``.<name>.<pid>@<host>.<random>.tmp``; a killed writer leaves one behind. When a stage takes
its lock it removes those of this host whose process is gone (:func:`remove_stale_temp_files`);
temp files of live processes and of other hosts are left alone.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from curatune.errors import CuratuneError, environment_error

#: Stage names as they appear in the lock file name and in messages.
STAGES = ("curate", "train", "eval")

#: ``.<name>.<pid>@<host>.<random>.tmp``: the temp-file names of atomic_path, and only those.
TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[^./]+)\.[a-z0-9_]+\.tmp$")

# Locks this process holds: path -> (fd, depth). flock is per open file, so taking the same
# stage lock again in one process (curatune run -> run_curate) must reuse the open file.
_HELD: dict[str, tuple[int, int]] = {}


class RunLockedError(CuratuneError):
    """Another process runs this stage on this run directory."""


def host_name() -> str:
    """This machine's name as used in temp-file names (no dots or slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "host"


def lock_path(root: Path, stage: str) -> Path:
    return Path(root) / f".lock-{stage}"


@contextlib.contextmanager
def stage_lock(root: str | os.PathLike, stage: str) -> Iterator[None]:
    """Hold the lock of ``stage`` on run directory ``root`` for the duration of the block."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    path = lock_path(Path(root), stage)
    key = str(path.absolute())
    if key in _HELD:  # already ours: nest
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = _acquire(path, stage)
    _HELD[key] = (fd, 1)
    try:
        remove_stale_temp_files(Path(root))
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, stage: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # mode 0666 & ~umask, like any file
    except OSError as exc:
        raise environment_error(exc, path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLockedError(_locked_message(path, stage, holder)) from None
        raise environment_error(exc, path, action="lock") from exc
    _write_holder(fd, stage)
    return fd


def _write_holder(fd: int, stage: str) -> None:
    holder = {
        "pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
    }
    data = (json.dumps(holder) + "\n").encode()
    with contextlib.suppress(OSError):  # who holds it is information, the lock itself is the flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}


def _locked_message(path: Path, stage: str, holder: dict[str, Any]) -> str:
    who = (
        f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('since', '?')}"
        + (f" ({holder['command']})" if holder.get("command") else "")
        if holder else "another process"
    )
    return (
        f"{path.parent}: another curatune {stage} is running on this run directory: {who}. "
        f"Wait for it to finish or stop it; the lock ({path}) is released when that process ends. "
        "Two processes on one stage would overwrite each other's files."
    )


def holds_stage_lock(stage: str) -> Callable:
    """Decorate ``run_<stage>(config, run_dir, ...)`` to run under the stage lock.

    ``run_dir`` may be a RunDir, a path, or None (then ``config.run_dir``)."""
    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def locked(config, run_dir=None, *args, **kwargs):
            # A RunDir's folder is .root; a path is the folder itself (pathlib's .root is "/", not it).
            root = run_dir if isinstance(run_dir, (str, os.PathLike)) else getattr(run_dir, "root", run_dir)
            if root is None:
                root = config.run_dir
            with stage_lock(root, stage):
                return function(config, run_dir, *args, **kwargs)
        return locked
    return decorate


def remove_stale_temp_files(root: Path) -> list[Path]:
    """Delete atomic_path temp files under ``root`` left by processes of this host that are gone."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    host = host_name()
    for path in root.rglob(".*.tmp"):
        match = TEMP_NAME.match(path.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def temp_prefix(name: str) -> str:
    """Prefix of atomic_path's temp file for ``name``: who wrote it, so that a later run can tell
    a killed writer's leftover from a live writer's file."""
    return f".{name}.{os.getpid()}@{host_name()}."


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 minus the umask.

    ``mkstemp`` creates 0600 files whatever the umask, which locked teammates and service
    accounts out of every run file. The umask is read from /proc (Linux) because setting it
    to read it back would race with other threads creating files."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def restore_default_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file under a folder) the mode a plain ``open()`` would.

    safetensors 0.8 writes through its own 0600 temporary file and renames it over the target
    (safetensors issue #782), so weights from ``save_pretrained`` or ``save_file`` end up
    readable by their owner only: a teammate or a serving account could not load them."""
    mode = default_file_mode()
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        os.chmod(file, mode)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
