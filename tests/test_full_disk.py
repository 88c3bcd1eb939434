"""Item 18: writing to a full disk (`> /dev/full`) is one line on stderr and exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")


def run_into_full(*argv: str) -> subprocess.CompletedProcess:
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "kogpt", *argv], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def one_line_error(result: subprocess.CompletedProcess) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1] == "error: cannot write the output: No space left on device"


def test_cache_list_into_a_full_disk():
    one_line_error(run_into_full("cache", "list"))


@pytest.mark.parametrize("json", [[], ["--json"]], ids=["text", "json"])
def test_a_prompt_into_a_full_disk(tiny_dir, json):
    one_line_error(run_into_full("--model", str(tiny_dir), "--device", "cpu", "-p", "안녕", "--max-new-tokens", "3", *json))


def test_eval_into_a_full_disk(tiny_dir):
    one_line_error(run_into_full("eval", "nsmc", "--data", str(DATA / "nsmc.txt"), "--model", str(tiny_dir),
                                 "--device", "cpu", "--shots", "0", "--limit", "2", "--json"))
