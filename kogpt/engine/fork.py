"""After `os.fork()`: the child has no worker threads, so every engine starts one of its own.

`fork()` copies only the forking thread. An engine whose worker served in the parent would
otherwise queue the child's requests for a thread that does not exist there: `generate()` hung
forever (`multiprocessing`'s fork start method, the Linux default before Python 3.14). Queues and
locks are replaced too, as a parent's thread may have held them at the fork.
"""

from __future__ import annotations

import os
import queue
import threading

from kogpt.engine import worker


def reset_in_child() -> None:
    worker._model_locks_guard, worker._threads_guard = threading.Lock(), threading.Lock()
    worker._model_locks.clear()  # a lock the parent's worker held at the fork would never be released
    worker._threads.clear()
    for core in list(worker._cores):
        core.requests, core.start_lock = queue.SimpleQueue(), threading.Lock()
        core.current, core.serving, core.scheduler = None, False, None  # the parent's batch stays there
    worker._cores.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=reset_in_child)
