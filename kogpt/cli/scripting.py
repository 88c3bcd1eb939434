"""One-shot and batch modes: `-p`, `--prompt-file`, `--prompts-file`, `--json`.

Only model text (or JSON) goes to stdout; figures and errors go to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kogpt.api import KoGPT
from kogpt.cli.render import Renderer, printable
from kogpt.errors import KoGPTError
from kogpt.settings import InputError, SamplingSettings, parse_setting


def read_text(source: str, stdin: TextIO | None = None) -> str:
    """The text of FILE, or of standard input for `-`; invalid UTF-8 is reported with its byte offset."""
    name = "standard input" if source == "-" else source
    try:
        data = (stdin or sys.stdin).buffer.read() if source == "-" else Path(source).expanduser().read_bytes()
    except OSError as exc:
        raise KoGPTError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KoGPTError(f"{name} is not valid UTF-8: byte {exc.start} is {data[exc.start]:#04x}") from None


def parse_prompts_file(text: str, name: str, base: SamplingSettings) -> Iterator[tuple[int, str, SamplingSettings]]:
    """(line number, prompt, settings) for each non-empty line: plain text, or a JSON object with a
    `prompt` field and optional setting fields (`{"prompt": "...", "temperature": 0.5}`)."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            yield number, line, base
            continue
        try:
            item = json.loads(line)
            prompt = item.pop("prompt")
            if not isinstance(prompt, str):
                raise InputError("`prompt` must be a string")
            changes = {key: _json_setting(key, value) for key, value in item.items()}
        except (json.JSONDecodeError, KeyError, InputError) as exc:
            reason = "no `prompt` field" if isinstance(exc, KeyError) else str(exc)
            raise KoGPTError(f"{name}:{number}: {reason}") from None
        yield number, prompt, dataclasses.replace(base, **changes)


def _json_setting(key: str, value):
    if key == "stop" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, bool):
        value = "on" if value else "off"
    return parse_setting(key, "none" if value is None else str(value))


def run_batch(
    gpt: KoGPT,
    prompts: list[tuple[str, str, SamplingSettings]],
    renderer: Renderer,
    as_json: bool,
    out: TextIO | None = None,
) -> int:
    """Complete each (label, prompt, settings) in order; return 1 if any prompt failed, else 0."""
    out = out or sys.stdout
    show = printable if out.isatty() else str  # raw text into pipes and files
    failed = False
    for label, prompt, settings in prompts:
        current = [0]

        def on_text(index: int, text: str) -> None:
            if as_json:
                return
            if index != current[0]:  # the next of several sequences starts on a new line
                out.write("\n")
                current[0] = index
            out.write(show(text))
            out.flush()

        try:
            records = gpt.complete(prompt, settings, on_text)
        except KoGPTError as exc:
            renderer.error(f"{label}: {exc}" if label else f"error: {exc}")
            failed = True
            continue
        out.write("".join(r.to_json() + "\n" for r in records) if as_json else "\n")
        out.flush()
        for record in records:
            renderer.stats(record.completion_tokens, record.seconds, record.finish_reason)
    return 1 if failed else 0
