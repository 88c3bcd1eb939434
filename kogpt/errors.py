"""The one exception type users see: its message is a sentence that says what to do."""

from __future__ import annotations


class KoGPTError(Exception):
    """A failure the user can act on. `cli.main` prints it as one line and exits 1."""


class InputError(KoGPTError, ValueError):
    """A value or a text that cannot be used; the message says why, in one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `KoGPT.complete`: carries the records finished so far and the interrupted one."""

    def __init__(self, records: list) -> None:
        super().__init__()
        self.records = records


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread by the command line's handler: it unwinds like
    Ctrl-C (the generation stops, the partial record is kept in `records`), then exits 128 + signal."""

    def __init__(self, signum: int, records: list | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.records = records or []


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
