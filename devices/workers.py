"""All cores on one long block: the simulator's stages run a block's parts in parallel.

The simulated bench's per-sample kernels (numba, ``nogil``) and its FFTs (scipy.fft) release
the GIL, so a long block cut into parts runs on every core. The calling thread runs the first
part itself and a small persistent pool runs the others. Several threads may call at once
(the emulator's and the rig server's threads each drive a bench): each caller does its own
first part, so it always makes progress, and a pool task never waits on the pool (a call from
inside one runs its parts in turn). numba's own parallel threading layers are not used: the
default one (workqueue) is not safe when called from several threads at once.

The parts are fixed by the block length and the core count alone, and every part computes
what the whole block's loop computes for its samples: results do not depend on timing.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: blocks shorter than this run in one part (a hand-off to the pool costs tens of microseconds)
MIN_PART = 1 << 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_local = threading.local()


def cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():  # a forked child has none of the parent's threads
            _pool = ThreadPoolExecutor(max_workers=max(1, cores() - 1), thread_name_prefix="sim-block",
                                       initializer=_mark_worker)
            _pool_pid = os.getpid()
        return _pool


def _mark_worker() -> None:
    _local.in_pool = True


def in_pool() -> bool:
    """True on one of the pool's threads (where :func:`run` runs parts in turn)."""
    return bool(getattr(_local, "in_pool", False))


def spans(n: int, align: int = 1, min_part: int = MIN_PART) -> list[tuple[int, int]]:
    """[lo, hi) parts of ``range(n)``, one per core (fewer for short blocks); inner bounds multiples of ``align``."""
    parts = max(1, min(cores(), n // max(min_part, 1)))
    bounds = [0]
    for k in range(1, parts):
        b = (n * k // parts) // align * align
        if bounds[-1] < b < n:
            bounds.append(b)
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def run(fn, parts: list[tuple[int, int]]) -> list:
    """``fn(lo, hi)`` for every part, the first in this thread and the rest in the pool; results in order.

    Every part has finished when this returns or raises (they write into shared arrays).
    """
    if len(parts) == 1 or in_pool():
        return [fn(lo, hi) for lo, hi in parts]
    pool = _executor()
    futures = [pool.submit(fn, lo, hi) for lo, hi in parts[1:]]
    try:
        first = fn(*parts[0])
    finally:
        rest = [f.exception() for f in futures]  # wait for all of them, even when the first raised
    for f, exc in zip(futures, rest):
        if exc is not None:
            raise exc
    return [first, *(f.result() for f in futures)]


def run_tasks(tasks: list) -> list:
    """Call every task (no arguments), the first in this thread and the rest in the pool; results in order.

    For stages that overlap (e.g. a sequential loop on one part of a block while the next part is
    prepared). On a pool thread (:func:`in_pool`) the tasks run one after the other, so tasks that
    wait on each other must not be run from there. Every task has finished when this returns or
    raises.
    """
    return run(lambda i, _: tasks[i](), [(i, i + 1) for i in range(len(tasks))])


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_heap_kept = False


def keep_freed_memory(block_bytes: int = 32 << 20, trim_bytes: int = 128 << 20) -> bool:
    """Let glibc reuse the simulator's freed blocks instead of returning them to the system.

    A read allocates and frees tens of MB of blocks (each stage's output); glibc gives blocks above its
    (adaptive) threshold back to the system and the next read faults them in again, page by page, which
    cost a quarter of a 1 M-sample read's CPU time (and serialises threads on the address space). Blocks
    up to ``block_bytes`` then come from the heap, which keeps up to ``trim_bytes`` free. Process-wide
    and idempotent; False where the C library has no ``mallopt`` (nothing changes there).
    """
    global _heap_kept
    with _lock:
        if _heap_kept:
            return True
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _heap_kept = bool(mallopt(_M_MMAP_THRESHOLD, block_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes))
        return _heap_kept
