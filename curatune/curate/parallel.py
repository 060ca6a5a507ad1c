"""Map a function over chunks of work on several processes, in order, with progress."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from curatune.curate.base import ProgressTask


def _context():
    # fork starts workers in milliseconds and shares the parent's imports; the workers only
    # run numpy and the standard library, so it is safe even after torch was imported.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def effective_workers(workers: int) -> int:
    return max(1, min(workers, os.cpu_count() or 1))


def parallel_map(
    func: Callable[[Any], Any],
    chunks: Sequence[Any],
    workers: int,
    task: ProgressTask | None = None,
    sizes: Sequence[int] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[Any]:
    """``[func(c) for c in chunks]`` on ``workers`` processes (in-process when 1 or one chunk).

    ``sizes`` (records per chunk) advance the progress task as chunks finish.
    ``initializer(*initargs)`` runs once per worker: the way to ship large shared state
    (an index) once instead of with every chunk.
    """
    workers = effective_workers(workers)
    sizes = list(sizes) if sizes is not None else [1] * len(chunks)
    results: list[Any] = []
    if workers == 1 or len(chunks) <= 1:
        if initializer:
            initializer(*initargs)
        for chunk, size in zip(chunks, sizes):
            results.append(func(chunk))
            if task:
                task.advance(size)
        return results
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=initializer, initargs=initargs
    ) as pool:
        for result, size in zip(pool.map(func, chunks), sizes):
            results.append(result)
            if task:
                task.advance(size)
    return results
