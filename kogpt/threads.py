"""kogpt's OpenMP policy: set in the environment before torch is imported, by every front end.

OpenMP reads `OMP_WAIT_POLICY` and `OMP_NUM_THREADS` once, when torch loads it. By default its
worker threads spin while they wait for work; on a CPU shared with anything else (a browser, an
indexer, `kogpt serve`'s own event loop) the spinning threads take the cores the computing thread
needs, and a server with one busy neighbour decoded at half the speed of the CLI. `PASSIVE` makes
them sleep instead. `apply()` is the first thing `kogpt` and `python -m kogpt` do (the REPL,
scripting, `kogpt eval`, `kogpt serve`, `kogpt bench`); a value the user set in the environment is
kept as it is. A Python script using `kogpt.KoGPT` sets these itself, before importing torch.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"

# What `apply` did, for `--debug` and the tests: {variable: (value, "kogpt" or "yours")}.
APPLIED: dict[str, tuple[str, str]] = {}
_BEFORE_TORCH = False


def physical_cores() -> int:
    """The physical cores (hyper-threads share a core's arithmetic units and gain nothing here)."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def default_count() -> int:
    """The threads that compute when `--threads` is not given: the user's `OMP_NUM_THREADS` when it
    is a whole number of 1 or more, else the physical cores."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else physical_cores()


def apply(threads: int | None = None, count: bool = True) -> dict[str, tuple[str, str]]:
    """Set `OMP_WAIT_POLICY` and (with `count`) `OMP_NUM_THREADS` where the user has not: PASSIVE,
    and `threads` or the physical cores. Call it before anything imports torch; after, it changes
    nothing torch would read (`describe()` says so)."""
    global _BEFORE_TORCH
    _BEFORE_TORCH = "torch" not in sys.modules
    wanted = {"OMP_WAIT_POLICY": WAIT_POLICY}
    if count:
        wanted["OMP_NUM_THREADS"] = str(threads or physical_cores())
    for name, value in wanted.items():
        if APPLIED.get(name, (None, ""))[1] == "kogpt" and os.environ.get(name) == APPLIED[name][0]:
            continue  # set by an earlier call in this process
        if os.environ.get(name, "").strip():
            APPLIED[name] = (os.environ[name], "yours")
        else:
            os.environ[name] = value
            APPLIED[name] = (value, "kogpt")
    return dict(APPLIED)


def describe() -> str:
    """One line for `--debug`: what `apply` set, and whether torch had already read it."""
    shown = ", ".join(f"{name}={value} ({who})" for name, (value, who) in APPLIED.items()) or "not set by kogpt"
    late = "" if _BEFORE_TORCH else "; torch was imported before kogpt set them: it keeps what it read then"
    return f"OpenMP: {shown}{late}"
