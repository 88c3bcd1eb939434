"""Item 16: a child forked after the parent generated starts an engine worker of its own."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_forked_child_generates(gpt):
    expected = gpt.generate("안녕하세요", temperature=0, max_length=12)  # the parent's worker is serving
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: generate, report, and leave without running the parent's atexit hooks
        code = 1
        try:
            os.close(read)
            text = gpt.generate("안녕하세요", temperature=0, max_length=12)
            os.write(write, text.encode("utf-8"))
            code = 0
        finally:
            os.close(write)
            os._exit(code)
    os.close(write)
    import select

    ready, _, _ = select.select([read], [], [], 30)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in generate()")
    got = b""
    while chunk := os.read(read, 4096):
        got += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got.decode("utf-8") == expected
    assert gpt.generate("안녕하세요", temperature=0, max_length=12) == expected  # the parent still serves
    sys.stdout.flush()
