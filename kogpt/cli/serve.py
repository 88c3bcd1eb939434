"""`kogpt serve`: an OpenAI-compatible completion API on the loaded model, or through vLLM.

The server listens at once and loads the model in a thread, so `/health` answers 503 while it loads.
SIGTERM or Ctrl-C stop it cleanly: streams end with a `server_shutting_down` error event and
`[DONE]` (their generations cancelled at the next token), waiting requests get a 503 at once,
running plain requests get `--shutdown-timeout` seconds to finish (then a 503), and the process
exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from kogpt.cli import flags, terminal
from kogpt.cli.serveflags import DEFAULT_MAX_TOKENS, build_parser  # noqa: F401 - `serve.build_parser` for main
from kogpt.errors import KoGPTError

log = logging.getLogger("kogpt")


def run(args: argparse.Namespace, renderer) -> int:
    if args.plan:
        flags.quiet_libraries(args.debug)
        from kogpt.cli.planview import show_plan

        return show_plan(flags.options_from_args(args), renderer.out, prefix_cache=args.prefix_cache,
                         max_batch=args.max_batch)
    args.api_key = api_key(args.api_key)
    check_host(args.host, args.api_key)
    defaults = flags.sampling_settings(args)
    if defaults.max_new_tokens is None and args.max_length is None:
        defaults.max_new_tokens = DEFAULT_MAX_TOKENS
    name = args.served_model_name or args.model
    if args.engine == "vllm":
        return exec_vllm(args, defaults, name)
    if (args.tensor_parallel_size, args.pipeline_parallel_size) != (1, 1):
        raise KoGPTError(
            "--tensor-parallel-size and --pipeline-parallel-size need --engine vllm; kogpt's own engine splits a model with --device-map"
        )
    try:
        from kogpt.server.app import ServerState, create_app
    except ImportError as exc:
        raise KoGPTError(f'kogpt serve needs its extra: pip install ".[serve]" in the kogpt checkout ({exc.name} is missing)') from None
    from kogpt.loading.checkpoint import check_directory, looks_local
    from kogpt.placement.decide import check_early
    from kogpt.server.guard import LOOPBACK_HOSTS, split_list

    check_early(flags.options_from_args(args))  # impossible flag combinations, before listening
    if looks_local(args.model):  # a missing directory, before listening
        check_directory(Path(args.model).expanduser())
    extra_hosts = split_list(args.allowed_hosts)
    hosts = [*LOOPBACK_HOSTS, *extra_hosts] if extra_hosts or (is_loopback(args.host) and not args.api_key) else None
    state = ServerState(
        name, defaults, args.api_key, transcript(args), allowed_hosts=hosts,
        allowed_origins=split_list(args.allowed_origins), max_queue=args.max_queue,
        shutdown_timeout=args.shutdown_timeout, max_batch=args.max_batch, prefix_cache=args.prefix_cache,
    )  # fmt: skip
    return serve(args, state, create_app(state))


def api_key(key: str | None) -> str | None:
    """The key as clients can send it: HTTP drops spaces around a header's value, so they are dropped."""
    if key is None:
        return None
    if not key.strip():
        raise KoGPTError("--api-key is empty")
    if key != key.strip():
        log.info("--api-key: dropped the spaces around it (a client cannot send them)")
    return key.strip()


def check_host(host: str, api_key: str | None) -> None:
    """Refuse an address this machine cannot listen on, and to listen beyond it without an API key."""
    if api_key is not None and not api_key.strip():
        raise KoGPTError("--api-key is empty")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise KoGPTError(f"--host {host}: not an address or name of this machine ({reason})") from None
    if api_key or is_loopback(host) or (addresses and all(is_loopback(a) for a in addresses)):
        return
    raise KoGPTError(
        f"--host {host} lets anyone who can reach this machine run the model and read its output: "
        "add --api-key KEY (or set KOGPT_API_KEY), or keep --host 127.0.0.1"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def transcript(args: argparse.Namespace):
    if args.transcript is None:
        return None
    from platformdirs import user_data_dir

    from kogpt.transcript import Transcript

    path = Path(args.transcript) if args.transcript else Path(user_data_dir("kogpt")) / "serve-transcript.jsonl"
    log.info("recording requests in %s", path)
    return Transcript(path, log.warning)


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise KoGPTError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(args: argparse.Namespace, state, app) -> int:
    """Listen, load the model in a thread, serve until SIGTERM or Ctrl-C; a failed load exits 1."""
    from kogpt.server import listener

    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    logging.getLogger("uvicorn").setLevel(logging.DEBUG if args.debug else logging.INFO)
    server = listener.make_server(app, state, args.header_timeout, args.body_timeout, args.max_connections)
    failure: list[BaseException] = []

    def load() -> None:
        try:
            gpt = load_model(args)
        except BaseException as exc:  # reported by the main thread once the server has stopped
            failure.append(exc)
            server.should_exit = True
            return
        state.ready(gpt)
        log.info("ready: %s on %s; %d-token context", state.served_name, gpt.loaded.device, gpt.context_length)

    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info(
        "kogpt serve: http://%s:%d/v1 (model %s), loading; GET /health answers 200 when ready",
        host,
        port,
        state.served_name,
    )
    loader = threading.Thread(target=load, name="kogpt-load", daemon=True)
    loader.start()
    # uvicorn handles SIGTERM and Ctrl-C itself (a graceful shutdown) and raises the signal again
    # afterwards, when there is nothing left to interrupt.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGHUP"):  # the terminal closed: stop as SIGTERM does, writing nothing to it

        def hang_up(signum, frame) -> None:
            terminal.silence(*(s for s in (sys.stdout, sys.stderr) if s.isatty()))
            server.handle_exit(signal.SIGTERM, frame)

        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hang_up)
    try:
        listener.run(server, [sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    # Threads still inside torch when the interpreter exits abort it ("terminate called without an
    # active exception"): let cancelled generations reach their next token, and leave a load unfinished
    # by ending the process at once.
    if state.runner is not None:
        state.runner.cancel_all()
        if not state.runner.wait_idle(args.shutdown_timeout):
            log.warning("a generation did not stop within --shutdown-timeout; exiting anyway")
            _exit_now(0)
    if loader.is_alive():
        log.info("kogpt serve stopped before the model finished loading")
        _exit_now(0)
    log.info("kogpt serve stopped")
    return 0


def _exit_now(code: int) -> None:
    """End the process without waiting for threads that cannot be interrupted."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def load_model(args: argparse.Namespace):
    """The model the flags ask for (as `flags.load_model` loads it, without the spinner: a server logs)."""
    from kogpt.api import KoGPT
    from kogpt.loading.checkpoint import resolve_checkpoint

    flags.quiet_libraries(args.debug)
    options = flags.options_from_args(args)
    return KoGPT.from_options(options, resolve_checkpoint(options.model, options.revision))


def exec_vllm(args: argparse.Namespace, defaults, name: str) -> int:
    """Replace this process with vLLM's OpenAI server, set up for KoGPT (see `kogpt.server.vllm`)."""
    from platformdirs import user_cache_dir

    from kogpt.loading import vllm as vllm_support
    from kogpt.loading.checkpoint import load_config, looks_local, resolve_checkpoint
    from kogpt.server import vllm

    vllm_support.check_parallel(args.tensor_parallel_size, args.pipeline_parallel_size)
    vllm_support.check_available()
    checkpoint = resolve_checkpoint(args.model, args.revision)
    local = looks_local(args.model)
    revision = None if local else args.revision
    cache = Path(user_cache_dir("kogpt")) / "vllm-tokenizer" / (checkpoint.name if local else revision)
    tokenizer = vllm_support.tokenizer_dir(checkpoint, load_config(checkpoint).vocab_size, cache)
    argv = vllm.command(
        args.model, revision, tokenizer, name, args.host, args.port, args.dtype, args.tensor_parallel_size, args.pipeline_parallel_size, defaults, args.trust_remote_code,
    )  # fmt: skip
    env = dict(os.environ)
    if args.api_key:
        env["VLLM_API_KEY"] = args.api_key
    log.info("starting vLLM: %s", " ".join(argv))
    os.execvpe(argv[0], argv, env)
    return 0  # not reached
