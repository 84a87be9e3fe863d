"""Handing a generator's items from a thread of its own to the caller's, with bounded memory.

The transcoder runs three stages of one layer at once (decompress and hash; compress and
spill; send) with this one helper: an exception in the producer is raised in the
consumer, and a consumer that stops early stops the producer at its next hand-over.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["in_thread"]

T = TypeVar("T")


class _Done:
    """The producer's last item: it has no more."""


class _Failed(Generic[T]):
    """The producer raised: the exception travels to the consumer, who raises it."""

    def __init__(self, error: BaseException):
        self.error = error


def in_thread(
    produce: Callable[[], Iterator[T]], *, maxsize: int, discard: Callable[[T], None] | None = None
) -> Iterator[T]:
    """Run the generator ``produce()`` in a thread of its own, handing its items over a
    queue of ``maxsize``: the two sides work at the same time, with bounded memory. An
    exception in the thread is raised here. When the consumer stops early, the thread
    stops at its next hand-over, and items it made but nobody took go to ``discard``."""
    handover: queue.Queue[T | _Done | _Failed[T]] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def hand(item: T | _Done | _Failed[T]) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        items = produce()
        try:
            for item in items:
                if not hand(item):
                    if discard:
                        discard(item)
                    return
            hand(_Done())
        except BaseException as e:  # raised again in the consumer's thread
            hand(_Failed(e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the generator's own cleanup runs here, in its thread

    worker = threading.Thread(target=run, name="stream", daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
        while not handover.empty():
            left = handover.get_nowait()
            if discard and not isinstance(left, _Done | _Failed):
                discard(left)
