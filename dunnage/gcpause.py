"""Python's cyclic garbage collector paused while a burst of allocation runs.

Reading a snapshot or searching for a plan allocates hundreds of thousands of small objects
and frees nearly all of them by reference counting: they form few cycles. The burst still
sets off the collector's full passes, each walking every object the process holds (in the
extender, the watch cache's tens of thousands of objects among them). Paused, the collector
runs again once the last pause ends, and collects then whatever cycles were left.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0  # pauses under way, in any thread
_resume = False  # whether the collector ran when the first of them began


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block. Pauses may nest and overlap across threads:
    the collector resumes when the last ends, and only if it ran before the first began."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
