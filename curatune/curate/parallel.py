"""Map a function over chunks of work on several processes, in order, with progress.

Memory: chunks may be a generator, and only a few are built and in flight at a time
(``IN_FLIGHT_PER_WORKER`` per worker). A step that needs, say, the text of every record can
then build it chunk by chunk as workers become free, instead of holding a second copy of
the whole corpus while the pool works through it (``Executor.map`` submits every chunk
at once, so a list of all chunks had to exist first).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

from curatune.curate.base import ProgressTask

#: Chunks submitted ahead per worker: one running, one queued, so no worker waits for the
#: parent to build its next chunk.
IN_FLIGHT_PER_WORKER = 2
_END = object()


def _context():
    # fork starts workers in milliseconds and shares the parent's imports; the workers only
    # run numpy and the standard library, so it is safe even after torch was imported.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def effective_workers(workers: int) -> int:
    return max(1, min(workers, os.cpu_count() or 1))


def parallel_imap(
    func: Callable[[Any], Any],
    chunks: Iterable[Any],
    workers: int,
    task: ProgressTask | None = None,
    size_of: Callable[[Any], int] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[Any]:
    """``func(c) for c in chunks``, in order, on ``workers`` processes (in-process when 1).

    ``chunks`` is consumed lazily: at most ``workers * IN_FLIGHT_PER_WORKER`` chunks exist
    (built, submitted, not yet returned) at any time. ``size_of(chunk)`` (records in a
    chunk, default 1) advances the progress task as each result is handed back.
    ``initializer(*initargs)`` runs once per worker: the way to ship large shared state
    (an index) once instead of with every chunk.
    """
    workers = effective_workers(workers)
    size_of = size_of or (lambda chunk: 1)
    source = iter(chunks)
    # Look two chunks ahead: one chunk alone runs in-process (starting a pool costs more).
    ahead = [chunk for chunk in (next(source, _END), next(source, _END)) if chunk is not _END]
    source = itertools.chain(ahead, source)
    if workers == 1 or len(ahead) <= 1:
        if initializer:
            initializer(*initargs)
        for chunk in source:
            result = func(chunk)
            if task:
                task.advance(size_of(chunk))
            yield result
        return
    del ahead
    pending: deque[tuple[Future, int]] = deque()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=initializer, initargs=initargs
    ) as pool:
        for chunk in source:
            pending.append((pool.submit(func, chunk), size_of(chunk)))
            del chunk  # the pool holds it until sent; don't keep it alive here as well
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield _collect(pending.popleft(), task)
        while pending:
            yield _collect(pending.popleft(), task)


def _collect(item: tuple[Future, int], task: ProgressTask | None) -> Any:
    future, size = item
    result = future.result()
    if task:
        task.advance(size)
    return result


def parallel_map(
    func: Callable[[Any], Any],
    chunks: Sequence[Any],
    workers: int,
    task: ProgressTask | None = None,
    sizes: Sequence[int] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[Any]:
    """``[func(c) for c in chunks]``: :func:`parallel_imap` over a list, every result kept.

    ``sizes`` (records per chunk) advance the progress task as chunks finish."""
    sizes_in_order = iter(sizes if sizes is not None else [1] * len(chunks))
    return list(parallel_imap(func, chunks, workers, task, lambda chunk: next(sizes_in_order),
                              initializer, initargs))
