"""The one exception type users see: its message is a sentence that says what to do."""

from __future__ import annotations


class KoGPTError(Exception):
    """A failure the user can act on. `cli.main` prints it as one line and exits 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `KoGPT.complete`: carries the records finished so far and the interrupted one."""

    def __init__(self, records: list) -> None:
        super().__init__()
        self.records = records


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
