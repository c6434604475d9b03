"""Decode and preprocess the next images while the model scores the current one.

Batch scoring (parity, evaluation, the OOD gate's fit) spends its time in two places: image
work (decode, capture views, the preprocessing, image statistics: OpenCV and numpy, which
release the GIL) and the interpreter. :func:`prefetch_map` runs the image work in a background
thread with a bounded look-ahead, so on a multi-core CPU the two overlap; results come back in
input order, and a failure of one item is returned as its result (never lost, never a crash of
the batch).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1, ahead: int = 4,
                 catch: tuple[type[BaseException], ...] = (Exception,)) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, fn(item))`` in input order, ``fn`` computed up to ``ahead`` items in advance.

    Args:
        fn: the per-item work (runs in ``workers`` background threads).
        items: the inputs (consumed lazily: at most ``ahead`` results wait in memory).
        workers: background threads (0: no thread, ``fn`` runs inline: same results).
        ahead: items in flight at most.
        catch: exceptions of ``fn`` returned as the item's result instead of raised.

    Exceptions of ``fn`` not in ``catch`` propagate to the caller when their item is reached.
    """
    if workers <= 0:
        for item in items:
            try:
                yield item, fn(item)
            except catch as exc:
                yield item, exc
        return
    ahead = max(1, int(ahead))
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leukedge-prefetch") as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= ahead:
                    yield _take(pending, catch)
            while pending:
                yield _take(pending, catch)
        finally:  # the consumer stopped early: drop the work not started yet
            for _, fut in pending:
                fut.cancel()


def _take(pending: deque, catch) -> tuple:
    item, fut = pending.popleft()
    try:
        return item, fut.result()
    except catch as exc:
        return item, exc
