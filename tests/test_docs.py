"""Issue 18: docs that cannot rot.

Every shell or Python fenced block in README.md, README.ko.md and docs/ carries a marker on the
line before it: `<!-- run: LABEL -->` (this test runs it, on the tiny checkpoint, offline, and
compares its output where the block shows output: a `console` block's `$ ` lines are commands,
the lines after them their expected stdout and stderr, `...` standing for any lines) or
`<!-- not-run: REASON -->` (it needs the hub, a GPU, the 6B weights...). The Korean pages mirror
the English ones heading for heading; every flag of every command is in the reference pages, and
every flag the docs name exists. The README stays short and keeps CI's test command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "README.ko.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEST_COMMAND = 'pip install ".[test]" && python -m pytest -q'
CODE = {"bash", "sh", "shell", "console", "python", "py"}
MIRRORED = ("repl", "serve", "hardware", "troubleshooting", "files")
TINY = "/tmp/tiny-kogpt"

FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(run|not-run)\s*(?::\s*(.*?))?\s*-->\s*$")
HEADING = re.compile(r"^(#{1,6}) ")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: str | None  # "run" or "not-run"
    reason: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def outside_fences(page: Path):
    """(line number, line) of the page's lines that are not inside a fenced block."""
    inside = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, line


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = "\n".join(line[len(indent):] for line in lines[i + 1 : end])
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        found.append(Block(page, i + 1, lang, body, marker and marker.group(1), (marker and marker.group(2)) or ""))
        i = end + 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUN_BLOCKS = [block for block in ALL_BLOCKS if block.marker == "run"]


def test_every_fence_names_its_language():
    assert [str(b) for b in ALL_BLOCKS if not b.lang] == []


def test_every_shell_or_python_block_runs_here_or_says_why_not():
    unmarked = [str(b) for b in ALL_BLOCKS if b.lang in CODE and b.marker is None]
    unexplained = [str(b) for b in ALL_BLOCKS if b.marker == "not-run" and not b.reason]
    assert unmarked == [] and unexplained == []
    assert [str(b) for b in RUN_BLOCKS if b.lang not in CODE] == []


def test_run_blocks_stay_few():
    assert 1 <= len(RUN_BLOCKS) <= 12


# Running the blocks


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch directory that sees the repository's tests/ (the docs run `tests/...` paths), and
    an environment that keeps every file kogpt writes inside it, offline and without a GPU."""
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    home = tmp_path / "home"
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"), KOGPT_CACHE_DIR=str(home / "kogpt-cache"),
        HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), CUDA_VISIBLE_DEVICES="", COLUMNS="80",
        PYTHONIOENCODING="utf-8", LANG="C.UTF-8", LC_ALL="C.UTF-8",
    )  # fmt: skip
    return tmp_path, env


def with_tiny(text: str, tiny_dir: Path, workdir: Path) -> str:
    """The docs' /tmp/tiny-kogpt is the session's tiny checkpoint; a block that builds one itself
    builds it in the scratch directory."""
    if "make_tiny_checkpoint" in text:
        return text.replace(TINY, str(workdir / "tiny-kogpt"))
    return text.replace(TINY, str(tiny_dir))


def console_steps(body: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    command: list[str] | None = None
    for line in body.splitlines():
        if command is not None and command[-1].endswith("\\"):
            command.append(line)
        elif line.startswith("$ "):
            command = [line[2:]]
            steps.append(("", []))
        else:
            steps[-1][1].append(line)
            continue
        steps[-1] = ("\n".join(command), steps[-1][1])
    return steps


def matches(expected: list[str], printed: list[str]) -> bool:
    """Line by line, after trailing spaces; a `...` line stands for any lines."""
    if not expected:
        return not printed
    if expected[0] == "...":
        return any(matches(expected[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and expected[0] == printed[0] and matches(expected[1:], printed[1:])


def clean(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=str)
def test_the_block_runs(block, tiny_dir, workdir):
    cwd, env = workdir
    body = with_tiny(block.body, tiny_dir, cwd)
    run = dict(cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    if block.lang in ("python", "py"):
        result = subprocess.run([sys.executable, "-c", body], **run)
        assert result.returncode == 0, f"{block}: {result.stderr[-2000:]}"
    elif block.lang != "console":
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], **run)
        assert result.returncode == 0, f"{block}: {result.stderr[-2000:]}"
    else:
        for command, expected in console_steps(body):
            result = subprocess.run(["bash", "-c", command + " 2>&1"], **run)
            printed = clean(result.stdout.splitlines())
            assert matches(clean(expected), printed), f"{block}: `{command}` printed:\n" + "\n".join(printed)


# What the pages say


def headings(page: Path) -> list[int]:
    return [len(m.group(1)) for _, line in outside_fences(page) if (m := HEADING.match(line))]


def test_the_korean_readme_mirrors_the_english_one_section_by_section():
    assert headings(ROOT / "README.ko.md") == headings(README)


@pytest.mark.parametrize("name", MIRRORED)
def test_each_korean_page_mirrors_its_english_page(name):
    assert headings(ROOT / "docs" / "ko" / f"{name}.md") == headings(ROOT / "docs" / f"{name}.md")


def test_korean_terms_are_consistent():
    pages = [ROOT / "README.ko.md", *sorted((ROOT / "docs" / "ko").glob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    assert "누클리어스" not in text and "탐욕" not in text  # top-p(뉴클리어스) 샘플링; 그리디
    assert "top-p(뉴클리어스) 샘플링" in text and "그리디" in text


def test_the_readme_is_short_and_keeps_cis_test_command():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    assert any(re.fullmatch(re.escape(TEST_COMMAND) + r"( *#.*)?", line) for line in lines)


def test_ci_runs_the_readmes_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    sed = re.search(r"\$\((sed .*?README\.md)\)", script).group(1)
    extracted = subprocess.run(["bash", "-c", sed], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == TEST_COMMAND


def test_install_commands_use_the_checkout():
    """No kogpt on PyPI: `pip install "kogpt[serve]"` cannot work; `pip install ".[serve]"` does."""
    files = [*PAGES, *sorted((ROOT / "kogpt").rglob("*.py"))]
    wrong = [f"{path.relative_to(ROOT)}:{n}" for path in files
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "kogpt[" in line]  # fmt: skip
    assert wrong == []


def test_relative_links_point_at_files_that_exist():
    broken = []
    for page in PAGES:
        for _, line in outside_fences(page):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                path = target.split("#", 1)[0]
                if path and "://" not in path and not (page.parent / path).exists():
                    broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


# The flags


def parsers() -> dict[str, object]:
    from kogpt.cli import bench, cache, evaluate, serve
    from kogpt.cli.main import build_parser

    return {"kogpt": build_parser(), "eval": evaluate.build_parser(), "serve": serve.build_parser(),
            "bench": bench.build_parser(), "cache": cache.build_parser()}  # fmt: skip


def flags_of(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


# Where each command's flags are explained: its own page; flags it shares with `kogpt` may be
# explained once, on the pages of `kogpt`.
REFERENCE = {"kogpt": ("repl", "hardware"), "eval": ("eval",), "serve": ("serve",), "bench": ("performance",),
             "cache": ("files",)}

# Flags of other programs that the docs show: pip, hf (huggingface_hub), vllm, ray, /save in the
# REPL, benchmarks/run.py, omp_policy.py, request.py, clients.py, transformers serve and lm_eval; and the docs' example of a flag that does not exist.
OTHER_PROGRAMS = {"--index-url", "--local-dir", "--max-model-len", "--override-generation-config",
                  "--distributed-executor-backend", "--head", "--address", "--force", "--preset", "--out",
                  "--checkpoint", "--compare-to", "--rounds", "--busy", "--kernels", "--batch", "--peer", "--examples",
                  "--continuous-batching", "--clients", "--new-tokens", "--paths", "--prompt-tokens",
                  "--tasks", "--frobnicate"}  # fmt: skip


def named(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def page_text(*names: str) -> str:
    return "\n".join((ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8") for name in names)


@pytest.mark.parametrize("command", list(REFERENCE))
def test_every_flag_of_every_command_is_in_the_reference_docs(command):
    all_parsers = parsers()
    main_flags = flags_of(all_parsers["kogpt"])
    own = page_text(*REFERENCE[command])
    shared = page_text(*REFERENCE["kogpt"])
    missing = [flag for flag in sorted(flags_of(all_parsers[command]))
               if not named(own, flag) and not (flag in main_flags and named(shared, flag))]  # fmt: skip
    assert missing == []


def test_every_flag_the_docs_name_exists():
    known = set().union(*map(flags_of, parsers().values())) | OTHER_PROGRAMS
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    unknown = sorted({flag for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)} - known)
    assert unknown == []
