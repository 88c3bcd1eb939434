"""Issue 10, section 7: the README's set-up is two commands that CI runs as written, and its
examples are what the program prints."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(heading: str) -> list[str]:
    start = README.index(heading)
    body = README[README.index("```", start) :]
    body = body[body.index("\n") + 1 : body.index("```", 3)]
    return body.splitlines()


def test_setup_is_two_commands_one_to_run_one_to_test():
    commands = [line.split("  #")[0].strip() for line in block_after("## Install, run, test")]
    assert commands == ['pip install . && python -m kogpt', 'pip install ".[test]" && python -m pytest -q']


def test_ci_runs_the_readmes_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pattern = re.search(r"sed -n 's/\^\\\((.*?)\\\)", script).group(1)
    command = pattern.replace("\\.", ".").replace("\\[", "[").replace("\\]", "]")
    assert command == 'pip install ".[test]" && python -m pytest -q'
    extracted = subprocess.run(["bash", "-c", re.search(r"\$\((sed .*?README\.md)\)", script).group(1)],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == command


def test_the_plan_example_is_what_plan_prints(capsys):
    from kogpt.cli.main import main

    argv = ["--plan", "--device", "cuda", "--max-memory", "0=8GiB,1=8GiB"]
    assert "`kogpt " + " ".join(argv) + "`" in README
    assert main(argv) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert block_after("`kogpt --plan --device cuda --max-memory 0=8GiB,1=8GiB`") == printed


def test_the_refusal_example_is_what_plan_prints(capsys):
    from kogpt.cli.main import main

    assert main(["--plan", "--device", "cuda", "--max-memory", "0=8GiB"]) == 1
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    example = block_after("and the end of `kogpt --plan --device cuda --max-memory 0=8GiB`")
    assert printed[-len(example):] == example
