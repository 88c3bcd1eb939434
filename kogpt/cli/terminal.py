"""The process and its terminal: SIGTERM and SIGHUP end a session as Ctrl-C does, and a locale
that is not UTF-8 is named at start-up."""

from __future__ import annotations

import os
import signal
import sys

from kogpt.errors import Terminated

STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP (the terminal closed) end the program as Ctrl-C does: the generation
    stops, its partial record is written, then the exit code is 128 + the signal's number."""
    for name in STOP_SIGNALS:
        if hasattr(signal, name):  # no SIGHUP on Windows
            signal.signal(getattr(signal, name), _terminate)


def _terminate(signum, frame) -> None:
    # Only the first: a second signal must not interrupt the writing of the partial record.
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if signum == getattr(signal, "SIGHUP", None):  # the terminal is gone: writing to it would fail
        silence(*(s for s in (sys.stdin, sys.stdout, sys.stderr) if _is_terminal(s)))
    from prompt_toolkit.application import get_app_or_none

    app = get_app_or_none()
    if app is not None and app.is_running and app.loop is not None:
        # At a question: raised here, inside prompt_toolkit's event loop (blocked in select), the
        # exception would wait for the next key press; ending the prompt with it, through the
        # loop's wake-up pipe, returns at once.
        app.loop.call_soon_threadsafe(_end_prompt, app, signum)
        return
    raise Terminated(signum)


def _end_prompt(app, signum: int) -> None:
    if app.is_running and app.future is not None and not app.future.done():
        app.exit(exception=Terminated(signum))


def _is_terminal(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def silence(*streams) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass


def warn_locale(renderer, environ=None) -> None:
    """One line when the terminal's locale is not UTF-8: Korean would not type or show right."""
    if not (sys.stdin.isatty() or sys.stdout.isatty()):
        return
    name, value = locale_setting(environ)
    if "utf-8" not in value.lower().replace("utf8", "utf-8"):
        renderer.warning(
            f"the terminal's locale ({name}={value or 'unset'}) is not UTF-8: Korean may not type or show "
            "right; set LANG=C.UTF-8 (or ko_KR.UTF-8) and start kogpt again"
        )


def locale_setting(environ=None) -> tuple[str, str]:
    """The variable that sets the character encoding (LC_ALL, LC_CTYPE or LANG) and its value, as
    the user set it: for a C or unknown locale, Python itself sets LC_CTYPE=C.UTF-8 (PEP 538), so
    the environment the process started with is read where Linux keeps it."""
    env = environ if environ is not None else _initial_environment()
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        if env.get(name):
            return name, env[name]
    return "LANG", ""


def _initial_environment() -> dict[str, str]:
    try:
        with open("/proc/self/environ", "rb") as f:
            pairs = (entry.partition(b"=") for entry in f.read().split(b"\0") if b"=" in entry)
            return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, _, v in pairs}
    except OSError:  # not Linux: Python's own coercion is then rare
        return dict(os.environ)
