"""`--max-memory`: `DEVICE=SIZE` specs (or the API's dict) parsed into byte budgets per device.

Every malformed, ambiguous or absurd spec is a one-line KoGPTError: digits are ASCII, each device
is named once, sizes are whole bytes up to 1 EiB.
"""

from __future__ import annotations

import re
from decimal import Decimal

from kogpt.errors import KoGPTError

UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# ASCII only: `\d` would take ² or ٣, and IGNORECASE alone matches the Kelvin sign to k.
SIZE = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*([a-z]{1,3})\s*$", re.IGNORECASE | re.ASCII)
MEMORY_FORMAT = "DEVICE=SIZE[,DEVICE=SIZE...] like 0=10GiB,1=10GiB,cpu=30GiB"
MAX_BYTES = 2**60  # 1 EiB: more than any machine, small enough for every integer type on the way
MAX_GPU_INDEX = 1023

MaxMemory = dict  # {0: bytes, 1: bytes, "cpu": bytes}: GPU indices and "cpu"


def parse_size(text: str) -> int:
    """`10GiB` -> 10737418240. A unit is required: a bare `30` is ambiguous."""
    match = SIZE.match(text)
    if not match or match.group(2).lower() not in UNITS:
        raise KoGPTError(f"bad memory size {shown(text)}: use a number and a unit, like 10GiB or 500MB")
    size = int(Decimal(match.group(1)) * UNITS[match.group(2).lower()])
    if size > MAX_BYTES:
        raise KoGPTError(f"memory size {shown(text)} is larger than any machine (at most 1 EiB)")
    return size


def shown(value: object, limit: int = 40) -> str:
    """`repr(value)`, cut short: a message echoes what was typed, not a page of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_max_memory(text: str | dict | None) -> MaxMemory | None:
    """Parse `0=10GiB,1=10GiB,cpu=30GiB` into {0: bytes, 1: bytes, "cpu": bytes}.

    A dict (the Python API) may give sizes as strings or as whole numbers of bytes; keys are GPU
    indices (0 or "0" or "cuda:0") or "cpu". Each device may be named once.
    """
    if text is None or text == "" or text == {}:
        return None
    if isinstance(text, str):
        pairs = []
        for item in text.split(","):
            key, sep, size = item.partition("=")
            if not sep or not key.strip() or not size.strip():
                raise KoGPTError(f"bad --max-memory entry {shown(item.strip())}: expected {MEMORY_FORMAT}")
            pairs.append((key.strip(), size.strip()))
    elif isinstance(text, dict):
        pairs = list(text.items())
    else:
        example = MEMORY_FORMAT.split(" like ")[1]
        raise KoGPTError(f"max_memory must be a string like {example} or a dict, not {shown(text)}")
    budget: MaxMemory = {}
    for key, size in pairs:
        device = _memory_device(key)
        if device in budget:
            raise KoGPTError(f"--max-memory names {label(device)} twice ({shown(key)}); give each device once")
        budget[device] = _memory_size(key, size)
    return budget


def label(device: int | str) -> str:
    """A --max-memory key as people write it: 0 -> cuda:0."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _memory_device(key: object) -> int | str:
    if isinstance(key, int) and not isinstance(key, bool):
        name = str(key)
    elif isinstance(key, str):
        name = key.strip().lower().removeprefix("cuda:")
    else:
        name = ""
    if name == "cpu":
        return "cpu"
    if name.isascii() and name.isdigit() and int(name) <= MAX_GPU_INDEX:
        return int(name)
    raise KoGPTError(f"bad --max-memory device {shown(key)}: use a GPU index (0, 1, ...) or cpu")


def _memory_size(key: object, size: object) -> int:
    if isinstance(size, str):
        return parse_size(size)
    if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_BYTES:
        return size
    raise KoGPTError(
        f"bad --max-memory size {shown(size)} for {shown(key)}: use a size like '10GiB' or a whole number of bytes"
    )
