"""Test fixtures: the tiny checkpoint of `tests/tiny.py`, saved to a temporary directory and
loaded through the package's real loader. Nothing here touches the network, the 6B weights or a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.tiny import build_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# CI replays the same examples every run (a found failure is fixed in a commit of its own);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-kogpt"))


@pytest.fixture(scope="session")
def tiny_bin_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-kogpt-bin"), bin_fp16=True)


@pytest.fixture(scope="session")
def gpt(tiny_dir):
    from kogpt import KoGPT

    return KoGPT.load(str(tiny_dir), device="cpu")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """History and other per-user files go to a temp dir, never the real home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
