"""`kogpt serve` as a command: refusals in one line, SIGTERM, and the vLLM route's command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from kogpt.cli.main import main  # noqa: E402
from tests.serving import GatedGPT, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    return err


def test_a_public_host_needs_a_key(tiny_dir, capsys):
    assert main(["serve", "--model", str(tiny_dir), "--host", "0.0.0.0"]) == 1
    assert "--api-key" in one_error_line(capsys)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_key(host):
    from kogpt.cli.serve import check_host

    check_host(host, None)


def test_parallel_sizes_need_vllm(tiny_dir, capsys):
    assert main(["serve", "--model", str(tiny_dir), "--tensor-parallel-size", "2"]) == 1
    assert "--engine vllm" in one_error_line(capsys)


@pytest.mark.skipif(bool(os.environ.get("KOGPT_TEST_VLLM")), reason="vLLM and a GPU are here")
@pytest.mark.parametrize("command", [["serve", "--engine", "vllm"], ["eval", "nsmc", "--engine", "vllm"]])
def test_vllm_without_vllm_or_a_gpu_says_so(tiny_dir, capsys, command):
    extra = ["--data", str(REPO / "tests" / "data" / "nsmc.txt"), "--shots", "0"] if command[0] == "eval" else []
    assert main([*command, "--model", str(tiny_dir), *extra]) == 1
    err = one_error_line(capsys)
    assert "vLLM" in err or "GPU" in err


def test_vllm_command_line(tmp_path):
    from kogpt.server import vllm
    from kogpt.settings import SamplingSettings

    argv = vllm.command(
        "kakaobrain/kogpt", "KoGPT6B-ryan1.5b-float16", tmp_path, "kakaobrain/kogpt", "127.0.0.1", 8000,
        tensor_parallel=4, pipeline_parallel=2, defaults=SamplingSettings(temperature=0.5),
    )  # fmt: skip
    assert Path(argv[0]).name == "vllm" and argv[1:3] == ["serve", "kakaobrain/kogpt"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options["--revision"] == "KoGPT6B-ryan1.5b-float16" and options["--dtype"] == "float16"
    assert options["--tokenizer"] == str(tmp_path) and options["--served-model-name"] == "kakaobrain/kogpt"
    assert options["--tensor-parallel-size"] == "4" and options["--pipeline-parallel-size"] == "2"
    assert options["--max-model-len"] == "2048"
    assert json.loads(options["--override-generation-config"])["temperature"] == 0.5


def test_serve_engine_vllm_execs_vllms_server(tiny_dir, monkeypatch):
    """The whole `kogpt serve --engine vllm` path up to the exec, with vLLM and the GPU stood in for."""
    from transformers import AutoTokenizer

    calls = []
    monkeypatch.setattr("kogpt.loading.vllm.check_available", lambda: None)
    monkeypatch.setattr(os, "execvpe", lambda file, argv, env: calls.append((argv, env)))
    argv = ["serve", "--engine", "vllm", "--model", str(tiny_dir), "--host", "0.0.0.0", "--api-key", "s3cret",
            "--temperature", "0.3", "--tensor-parallel-size", "2"]  # fmt: skip
    assert main(argv) == 0
    ((command, env),) = calls
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert command[1:3] == ["serve", str(tiny_dir)] and "--revision" not in options  # a local directory
    assert options["--served-model-name"] == str(tiny_dir) and options["--host"] == "0.0.0.0"
    assert options["--tensor-parallel-size"] == "2"
    assert json.loads(options["--override-generation-config"])["temperature"] == 0.3
    assert AutoTokenizer.from_pretrained(options["--tokenizer"]).eos_token == "[EOS]"
    assert "s3cret" not in command and env["VLLM_API_KEY"] == "s3cret"  # out of `ps`


def test_vllm_parallel_sizes_fit_kogpt():
    from kogpt.errors import KoGPTError
    from kogpt.loading.vllm import check_parallel

    check_parallel(16, 2)
    for tp, pp in [(3, 1), (32, 1), (1, 0), (1, 29)]:
        with pytest.raises(KoGPTError):
            check_parallel(tp, pp)


def test_vllm_tokenizer_directory_names_the_special_tokens(tiny_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from kogpt.loading.vllm import tokenizer_dir

    path = tokenizer_dir(tiny_dir, AutoConfig.from_pretrained(tiny_dir).vocab_size, tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(path)  # what vLLM does with --tokenizer
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("[BOS]", "[EOS]", "[PAD]")
    assert tokenizer.eos_token_id == 1


def test_sigterm_mid_stream_cancels_and_exits_cleanly(tiny_dir, gpt, monkeypatch):
    """SIGTERM while a stream is in flight: the stream ends with OpenAI's error event
    (`server_shutting_down`) and `[DONE]`, its generation is cancelled, exit 0."""
    from kogpt.cli import serve
    from kogpt.server.app import ServerState

    gated, runners = GatedGPT(gpt), []
    monkeypatch.setattr(serve, "load_model", lambda args: gated)
    ready = ServerState.ready
    monkeypatch.setattr(
        ServerState, "ready", lambda self, g: runners.append(ready(self, g)) or runners[-1]
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    seen: list[str] = []

    def client() -> None:
        wait_for(lambda: _status(url + "/health") == 200, "the server to be ready")
        body = {"prompt": "인간처럼", "max_tokens": 100, "temperature": 0, "stream": True}
        try:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as response:
                for line in response.iter_lines():
                    seen.append(line)
                    if line.startswith("data: {"):
                        os.kill(os.getpid(), signal.SIGTERM)  # mid-stream: the generation waits at the gate
        except httpx.RemoteProtocolError:  # the server cut the stream: the request was cancelled
            seen.append("cut")
        gated.gate.set()  # the generation reaches its next token, sees the cancel and stops

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert main(["serve", "--model", str(tiny_dir), "--device", "cpu", "--port", str(port)]) == 0
    thread.join(30)
    (runner,) = runners
    assert runner.stats.running == 0  # serve waited for it before returning
    assert runner.stats.cancelled == 1 and runner.stats.finished == 0
    events = [line[len("data: "):] for line in seen if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "cut" not in seen
    error = json.loads(events[-2])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events[:-2])  # no false "stop"


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_the_real_command_serves_and_stops_cleanly(tiny_dir, tmp_path, stop):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    transcript = tmp_path / "t.jsonl"
    argv = [sys.executable, "-m", "kogpt", "serve", "--model", str(tiny_dir), "--device", "cpu", "--port", str(port),
            "--transcript", str(transcript)]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(url + "/health") == 200 or process.poll() is not None, "the server to be ready", 120)
        reply = httpx.post(url + "/v1/completions", json={"prompt": "안녕", "max_tokens": 3}, timeout=30)
        assert reply.status_code == 200
        process.send_signal(getattr(signal, stop))
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out
    assert "Traceback" not in out and "kogpt serve stopped" in out
    (record,) = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    assert record["prompt"] == "안녕" and record["completion"] == reply.json()["choices"][0]["text"]
