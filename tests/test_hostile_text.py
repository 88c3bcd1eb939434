"""Issue 10, section 1: text that is not valid Unicode, wherever it enters, is one line naming its
source (and the byte offset for bytes), before any model work; the REPL and its toolbar go on."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kogpt import KoGPTError
from kogpt.cli.repl import GOODBYE, PlainInput, Repl
from kogpt.settings import SamplingSettings, check_value, parse_setting
from kogpt.text import TextError, check, decode
from tests.test_cli import run_kogpt
from tests.test_repl import CTRL_D, ENTER, make_renderer

SURROGATE = st.characters(categories=["Cs"])  # U+D800..U+DFFF: never drawn by st.characters() alone
ANY_CHARACTER = st.one_of(st.characters(), SURROGATE)
NOT_UTF8 = [b"\xb0\xa1", b"\xed\xa0\x80", b"\xff", b"\xc3", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]


@given(st.binary(max_size=40))
def test_bytes_decode_or_name_the_first_bad_byte(data):
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        with pytest.raises(TextError, match=rf"^the pipe is not valid UTF-8: byte {exc.start + 7} is 0x{data[exc.start]:02x}$"):
            decode(data, "the pipe", offset=7)
    else:
        assert decode(data, "the pipe", offset=7) == expected


@given(st.text(ANY_CHARACTER, max_size=30))
def test_any_str_is_checked_in_one_line(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(TextError, match=r"^the prompt is not valid (UTF-8: byte \d+ is 0x[0-9a-f]{2}|text: character \d+ is U\+D[89A-F][0-9A-F]{2}, a lone surrogate)$"):
            check(text, "the prompt")
    else:
        assert check(text, "the prompt") is text


def test_escaped_bytes_are_reported_as_the_bytes_they_were():
    raw = "안녕".encode() + b"\xb0\xa1"
    with pytest.raises(TextError, match="byte 6 is 0xb0"):
        check(raw.decode("utf-8", "surrogateescape"), "argv")
    with pytest.raises(TextError, match="character 1 is U\\+D800"):
        check("가\ud800", "the prompt")


def test_a_byte_order_mark_is_dropped_at_the_start_only():
    assert decode(b"\xef\xbb\xbf\xea\xb0\x80", "f") == "가"
    assert decode(b"\xef\xbb\xbf", "f", offset=3) == "\ufeff"


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.text(max_size=5), bad=SURROGATE)
def test_the_api_refuses_surrogates_before_any_model_work(gpt, monkeypatch, prefix, bad):
    monkeypatch.setattr(gpt.model, "generate", lambda **kw: pytest.fail("the model ran"))
    prompt = prefix + bad
    for call in (lambda: gpt.generate(prompt), lambda: gpt.stream(prompt),
                 lambda: gpt.complete(prompt, SamplingSettings()), lambda: gpt.encode(prompt),
                 lambda: gpt.generate("봄", stop=["a" + bad])):
        with pytest.raises(KoGPTError, match="not valid"):
            call()


def test_settings_text_and_values_are_checked():
    with pytest.raises(TextError, match="stop is not valid UTF-8: byte 1 is 0xff"):
        parse_setting("stop", "a\udcff")
    with pytest.raises(TextError, match="temperature is not valid"):
        parse_setting("temperature", "0.\udcb0")
    with pytest.raises(TextError, match="stop is not valid text"):
        check_value("stop", ["ok", "\ud800"])


def send_bytes_to_repl(gpt, data: bytes, tmp_path, hook=None):
    renderer = make_renderer()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        threading.Thread(target=inp.send_bytes, args=(data,), daemon=True).start()
        repl = Repl(gpt, renderer, history_path=tmp_path / "history")
        if hook:
            hook(repl)
        code = repl.run()
    return code, renderer.out.file.getvalue(), renderer.err.file.getvalue()


@pytest.mark.parametrize("bad", NOT_UTF8)
def test_typed_bytes_that_are_not_utf8_are_one_line_and_the_session_goes_on(gpt, tmp_path, bad):
    typed = []

    def hook(repl):
        repl.complete = typed.append

    keys = b"\xea\xb0\x80" + bad + b"\r" + "/set stop ".encode() + bad + b"\r" + "봄\r\r\r".encode() + b"\x04"
    code, out, err = send_bytes_to_repl(gpt, keys, tmp_path, hook)
    assert code == 0 and out.rstrip().endswith(GOODBYE)
    assert err.count("the typed line is not valid UTF-8: byte 3 is") == 1
    assert err.count("the typed line is not valid UTF-8: byte 10 is") == 1  # "/set stop " is 10 bytes
    assert [turn.prompt for turn in typed] == ["봄"]


@pytest.mark.parametrize("bad", ["\udcb0\udca1", "\ud800", "가\udfff", "\udcff" * 30_000])
def test_the_toolbar_never_raises(gpt, tmp_path, monkeypatch, bad):
    from tests.test_commands import toolbar_text

    text = toolbar_text(gpt, tmp_path, monkeypatch, bad)
    assert "tiny-kogpt" in text
    assert "not valid text" in text or "characters, over" in text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=12), max_size=6))
def test_any_bytes_piped_into_the_repl(gpt, tmp_path, lines):
    """Whatever arrives on a pipe, the REPL answers each bad line in one line and ends at EOF, 0."""
    completed = []
    renderer = make_renderer()
    data = b"\n".join(lines)
    repl = Repl(gpt, renderer, plain=PlainInput(io.BytesIO(data), io.StringIO()))
    repl.complete = completed.append
    assert repl.run() == 0
    err = renderer.err.file.getvalue()
    bad = [line for line in data.split(b"\n") if not is_utf8(line)]  # lines end at \n only
    assert err.count("standard input is not valid UTF-8: byte ") == len(bad)
    assert "Traceback" not in err


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_piped_offsets_count_from_the_start_of_the_stream(gpt):
    renderer = make_renderer()
    repl = Repl(gpt, renderer, plain=PlainInput(io.BytesIO(b"\xff\xfe\n\n\n" + "봄\n".encode() + b"ab\xc3\n"), io.StringIO()))
    repl.complete = lambda turn: None
    assert repl.run() == 0
    err = renderer.err.file.getvalue().splitlines()
    assert err[0] == "standard input is not valid UTF-8: byte 0 is 0xff"
    assert "standard input is not valid UTF-8: byte 11 is 0xc3" in err  # 3 + 1 + 1 + 4 + 2


def test_python_m_kogpt_with_invalid_bytes_piped_in(tiny_dir):
    result = subprocess.run([sys.executable, "-m", "kogpt", "--model", str(tiny_dir), "--device", "cpu"],
                            input=b"\xff\xfe\n\n\n", capture_output=True, timeout=180)
    assert result.returncode == 0
    assert b"standard input is not valid UTF-8: byte 0 is 0xff" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("flag", [["-p", "\udcff안녕"], ["--stop", "\udcb0"], ["--prompt-file", "BAD"],
                                  ["--prompts-file", "BAD"], ["-p", "-"]])
def test_argv_files_and_stdin_are_checked_before_the_load(tiny_dir, tmp_path, monkeypatch, capsys, flag):
    from kogpt import api
    cli = importlib.import_module("kogpt.cli.main")

    bad = tmp_path / "bad.txt"
    bad.write_bytes("봄\n".encode() + b"\xb0\xa1\n")
    flag = [str(bad) if f == "BAD" else f for f in flag]
    monkeypatch.setattr(api.KoGPT, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\xff")))
    try:
        code = cli.main(["--model", str(tiny_dir), "--device", "cpu", *flag, *(["-p", "x"] if flag[0] == "--stop" else [])])
    except SystemExit as exc:  # a flag's value: argparse's exit code 2
        code = exc.code
    err = capsys.readouterr().err
    assert code in {1, 2} and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not valid UTF-8: byte" in err


def test_json_fields_with_lone_surrogates_name_the_file_and_line(tiny_dir, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "봄"}\n{"prompt": "\\ud800"}\n', encoding="utf-8")
    result = run_kogpt(["--model", str(tiny_dir), "--device", "cpu", "--prompts-file", str(path)], "")
    assert result.returncode == 1
    assert f"{path}:2: the prompt is not valid text: character 0 is U+D800" in result.stderr
    path.write_text(json.dumps({"prompt": "봄", "stop": ["\udcff"]}) + "\n", encoding="utf-8")
    result = run_kogpt(["--model", str(tiny_dir), "--device", "cpu", "--prompts-file", str(path)], "")
    assert result.returncode == 1 and f"{path}:1: stop is not valid UTF-8" in result.stderr


def test_an_editor_that_writes_bytes_that_are_not_utf8(gpt, tmp_path, monkeypatch):
    from tests.test_repl import run_repl

    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'wb').write(b'ok\\xb0\\xa1')\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    code, out, err = run_repl(gpt, "/edit" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "the edited prompt is not valid UTF-8: byte 2 is 0xb0" in err


@pytest.mark.parametrize(
    "env, warned",
    [({"LANG": "C"}, True), ({"LC_ALL": "POSIX"}, True), ({"LANG": "ko_KR.EUC-KR"}, True), ({}, True),
     ({"LANG": "ko_KR.UTF-8"}, False), ({"LC_ALL": "en_US.utf8", "LANG": "C"}, False),
     ({"LANG": "C.UTF-8"}, False), ({"LC_CTYPE": "C", "LANG": "C.UTF-8"}, True)],
)
def test_a_locale_that_is_not_utf8_is_named_once(monkeypatch, env, warned):
    from kogpt.cli import terminal
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    renderer = make_renderer()
    terminal.warn_locale(renderer, env)
    err = renderer.err.file.getvalue()
    assert ("is not UTF-8" in err and "set LANG=C.UTF-8" in err and len(err.splitlines()) == 1) == warned


@pytest.mark.parametrize("lang", ["C", "ko_KR.EUC-KR"])
def test_the_locale_is_read_as_the_user_set_it_not_as_python_coerced_it(lang):
    script = "from kogpt.cli.terminal import locale_setting; import os; print(locale_setting(), os.environ.get('LC_CTYPE'))"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "LANG": lang}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.startswith(f"('LANG', '{lang}')"), result.stderr
