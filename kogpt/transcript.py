"""What a session produced: one `Record` per completion, written as JSON Lines.

The same record is printed by `--json`, saved by `/save`, and appended to the session transcript
as each generation finishes, so a crash or a closed terminal loses nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One completion of one prompt, with everything needed to reproduce it."""

    prompt: str
    completion: str = ""
    settings: dict = field(default_factory=dict)
    seed: int | None = None
    index: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str | None = None
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def append_jsonl(path: Path, records: Iterable[Record]) -> None:
    """Append records, each on a line of its own, to a file opened for appending.

    A short write is continued until the whole line is written. A line that cannot be finished
    (disk full) is cut off again where possible and raises `OSError`; and a file that does not end
    in a newline (a record cut short by a crash) gets one first, so every record starts on a fresh
    line and a reader never loses a good record to a bad neighbour.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        fresh = size == 0 or os.pread(fd, 1, size - 1) == b"\n"
        for record in records:
            line = ("" if fresh else "\n") + record.to_json() + "\n"
            _write_all(fd, line.encode("utf-8"))
            fresh = True
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` at the end of `fd`, or cut the file back to where it was and raise."""
    start = os.fstat(fd).st_size
    done = 0
    try:
        while done < len(data):
            written = os.write(fd, data[done:])
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


def write_jsonl(path: Path, records: Iterable[Record]) -> None:
    """Replace `path` with the records, atomically: a private (0600) temporary file in the same
    directory, written and synced, then renamed over `path`. Whatever was at `path` stays as it was
    if anything fails; anything there that is not a regular file (a device, a symbolic link, a
    directory) is never replaced: that raises `OSError` before anything is written."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise OSError(errno.EEXIST, f"it is {kind}, which is never replaced")
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write("".join(record.to_json() + "\n" for record in records).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Transcript:
    """The session's transcript file; an unwritable location warns once and the session goes on."""

    def __init__(self, path: Path | None, warn: Callable[[str], None]) -> None:
        self.path = path
        self._warn = warn

    def add(self, records: Iterable[Record]) -> None:
        if self.path is None:
            return
        try:
            append_jsonl(self.path, records)
        except OSError as exc:
            self._warn(f"cannot write the transcript {self.path}: {exc.strerror or exc}; it is off for this session")
            self.path = None
