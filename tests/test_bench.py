"""`kogpt bench` on the tiny checkpoint: what its JSON and markdown hold, and its one-line errors.
No figure is checked against a speed: this machine's load decides those."""

from __future__ import annotations

import json
import shutil

import pytest

from kogpt.cli.bench import sizes_for
from kogpt.cli.main import main
from kogpt.loading.kernels import KERNELS

TESTS = ["pp32", "tg8", "tg8 x4", "tg8 @ d96"]  # the defaults, scaled to the tiny model's 128 positions


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and not any(line.startswith("Traceback") for line in err)
    return err[-1]


def test_json_names_the_machine_and_each_formats_kernel_and_figures(tiny_dir, capsys):
    assert main(["bench", "--model", str(tiny_dir), "--quantize", "none,int8", "-r", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["cpu"] and isinstance(report["machine"]["flags"], list)
    assert report["torch"] and report["kogpt"] and report["omp"]["OMP_WAIT_POLICY"]
    assert (report["context"], report["tests"], report["repetitions"]) == (128, TESTS, 2)
    assert report["sizes"] == {"prompt": 32, "gen": 8, "depth": 96, "rows": 4}
    none, int8 = report["results"]
    assert (none["quantize"], int8["quantize"]) == ("none", "int8")
    assert KERNELS[int8["kernel"]].format == "int8" and int8["dtype"] == "bfloat16"
    for result in (none, int8):
        assert set(result["tests"]) == set(TESTS)
        for figures in result["tests"].values():
            assert len(figures["runs"]) == 2 and 0 < figures["min"] <= figures["median"]
        assert result["peak_rss_gib"] > 0 and result["load_s"] > 0 and result["start_s"] >= result["load_s"]
        assert result["threads"] >= 1


def test_markdown_is_a_table_to_paste(tiny_dir, capsys):
    assert main(["bench", "--model", str(tiny_dir), "--quantize", "int4", "-r", "1", "-n", "4", "-d", "0", "--rows", "2", "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "flags:" in lines[0] and "torch " in lines[0] and "median (min) of 1 run" in lines[0]
    assert lines[2:4] == ["| format | kernel | pp32 | tg4 | tg4 x2 | peak RSS | start |", "|---|---|---:|---:|---:|---:|---:|"]
    assert len(lines) == 5 and lines[4].startswith("| int4 | w4g") and lines[4].count("|") == 8


@pytest.mark.parametrize("value", ["fp8", "none,int5", "int8,int8", ""])
def test_a_bad_format_is_one_line(tiny_dir, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--model", str(tiny_dir), "--quantize", value])
    assert exit_.value.code == 2 and "--quantize" in one_error_line(capsys)


@pytest.mark.parametrize(("flags", "named"), [(["-p", "128"], "-p 128"), (["-d", "100", "-n", "40"], "-d 100 with -n 40")])
def test_sizes_too_large_for_the_context_are_refused_before_any_load(tiny_dir, capsys, flags, named):
    assert main(["bench", "--model", str(tiny_dir), *flags]) == 1
    assert named in one_error_line(capsys)


def test_a_format_that_fails_to_load_is_one_line_after_the_table(tiny_dir, tmp_path, capsys):
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(["bench", "--model", str(broken), "-r", "1", "--markdown"]) == 1
    captured = capsys.readouterr()
    assert "| none | failed: " in captured.out
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("error: none: ") and "Traceback" not in captured.err


def test_sizes_default_to_kogpts_and_shrink_with_the_context():
    assert sizes_for(2048, None, None, None) == {"prompt": 512, "gen": 128, "depth": 1536}
    assert sizes_for(128, None, None, None) == {"prompt": 32, "gen": 8, "depth": 96}
    assert sizes_for(128, 100, 0, 0) == {"prompt": 100, "gen": 0, "depth": 0}
