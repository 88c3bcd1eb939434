"""A test run leaves the user's own folders alone, whatever the environment says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests that write converted weights, kernel choices, a transcript, history and a server transcript.
WRITERS = ["tests/test_cache.py", "tests/test_scripting.py", "tests/test_repl.py", "tests/test_kernels.py"]


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.timeout(900)
def test_a_run_with_the_users_variables_set_touches_none_of_their_folders(tmp_path):
    sentinels = {name: tmp_path / name.lower() for name in
                 ("KOGPT_CACHE_DIR", "HF_HOME", "HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
    for folder in sentinels.values():
        folder.mkdir()
        (folder / "mine.txt").write_text("the user's own file\n")
    before = {name: snapshot(folder) for name, folder in sentinels.items()}
    env = {**os.environ, **{name: str(folder) for name, folder in sentinels.items()}, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *WRITERS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=850)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert {name: snapshot(folder) for name, folder in sentinels.items()} == before
