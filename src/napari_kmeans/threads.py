"""Chunks of an in-memory image worked on by a few threads, results in chunk order.

numpy releases the GIL inside its loops, so per-chunk steps made of numpy calls (hashing for
the sample, nearest-centre labelling) run side by side on several cores. Results are consumed
in chunk order, so that merging them gives exactly the one-thread result. Only the in-memory
path uses threads; on dask, the scheduler already runs blocks in parallel.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

THREADS = max(1, min(2, os.cpu_count() or 1))  # threads for the passes over in-memory images


def map_ordered(fn, items, threads: int):
    """``fn(item)`` for each of ``items``, yielded in order, ``threads`` at a time.

    At most ``threads + 1`` items are in flight, so that memory stays bounded whatever the
    number of items. ``items`` is consumed in the calling thread (a progress report in its
    generator runs there too). With one thread, no pool is used. The pool's threads are kept
    for later calls (memory freed by a thread is reused by the same thread); ``fn`` must not
    call ``map_ordered`` itself.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    pool = _pool(threads)
    pending = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # stopped early (an error, a cancelled run): drop the rest
            future.cancel()
        wait(pending)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The shared pool of ``threads`` threads of this process (made at first use; a forked
    child, which has none of its parent's threads, makes its own)."""
    key = (os.getpid(), threads)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="napari-kmeans")
        return _POOLS[key]
