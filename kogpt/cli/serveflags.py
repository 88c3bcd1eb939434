"""`kogpt serve`'s command line: the server's flags, and the model and sampling flags it shares."""

from __future__ import annotations

import argparse
import os

from kogpt.cli import flags
from kogpt.cli.parser import Parser, command_name

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default max_tokens
SHUTDOWN_SECONDS = 30.0
ENGINES = ("kogpt", "vllm")
# Kept in step with kogpt.server (not imported here: the serve extra may be missing).
MAX_QUEUE, HEADER_SECONDS, BODY_SECONDS, MAX_CONNECTIONS = 64, 10.0, 30.0, 512
MAX_BATCH = 8  # kogpt.engine.scheduler.MAX_BATCH


def size(text: str) -> int:
    """A memory size like 2GiB; 0 turns the prefix cache off."""
    from kogpt.errors import KoGPTError
    from kogpt.placement.budget import parse_size

    if text.strip() == "0":
        return 0
    try:
        return parse_size(text)
    except KoGPTError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free port), not {port}")
    return port


def positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{command_name()} serve",
        description="Serve the model over HTTP with OpenAI's completion API: POST /v1/completions, "
        "GET /v1/models, GET /health.",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default:{DEFAULT_HOST}, this machine only)"
    )
    server.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"0 to 65535 (default:{DEFAULT_PORT})")
    server.add_argument(
        "--api-key",
        default=os.environ.get("KOGPT_API_KEY"),
        metavar="KEY",
        help="clients must send Authorization: Bearer KEY; required for a --host other than this machine "
        "(default: $KOGPT_API_KEY)",
    )
    server.add_argument("--served-model-name", metavar="NAME", help="the model's name in the API (default: --model)")
    server.add_argument(
        "--transcript",
        nargs="?",
        const="",
        metavar="FILE",
        help="append every request and completion to FILE (JSON Lines; default FILE: in the user data "
        "directory); off unless given: the prompts are other people's data",
    )
    server.add_argument(
        "--shutdown-timeout", type=float, default=SHUTDOWN_SECONDS, metavar="S",
        help=f"on SIGTERM, seconds running non-streamed requests get to finish before they get a 503 "
        f"(default:{SHUTDOWN_SECONDS:g})",
    )  # fmt: skip
    server.add_argument(
        "--allowed-hosts", default=os.environ.get("KOGPT_ALLOWED_HOSTS"), metavar="NAMES",
        help="Host header values accepted besides localhost and 127.0.0.1, comma-separated (*.example.com: "
        "subdomains; *: any); without it a loopback --host without --api-key accepts loopback names only "
        "(default: $KOGPT_ALLOWED_HOSTS)",
    )  # fmt: skip
    server.add_argument(
        "--allowed-origins", default=os.environ.get("KOGPT_ALLOWED_ORIGINS"), metavar="ORIGINS",
        help="web page origins that may call the API (CORS), comma-separated, e.g. http://localhost:3000 "
        "(*: any); requests from other pages are refused (default: $KOGPT_ALLOWED_ORIGINS, else none)",
    )  # fmt: skip
    server.add_argument(
        "--max-queue", type=positive(int), default=MAX_QUEUE, metavar="N",
        help=f"requests that may wait for the model; more get 429 with Retry-After (default:{MAX_QUEUE})",
    )  # fmt: skip
    server.add_argument(
        "--header-timeout", type=positive(float), default=HEADER_SECONDS, metavar="S",
        help=f"seconds a client has to send a request's headers, then 408 (default:{HEADER_SECONDS:g})",
    )  # fmt: skip
    server.add_argument(
        "--body-timeout", type=positive(float), default=BODY_SECONDS, metavar="S",
        help=f"seconds a client has to send a request's body, then 408 (default:{BODY_SECONDS:g})",
    )  # fmt: skip
    server.add_argument(
        "--max-connections", type=positive(int), default=MAX_CONNECTIONS, metavar="N",
        help=f"open connections at most; more are refused with 503 (default:{MAX_CONNECTIONS})",
    )  # fmt: skip
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=ENGINES,
        default="kogpt",
        help="kogpt (built in, CPU or GPU) or vllm (GPUs, batching, multi-node)",
    )
    engine.add_argument(
        "--max-batch", type=positive(int), default=MAX_BATCH, metavar="N",
        help=f"kogpt: rows (all requests' choices together) decoded in one step; more wait their turn "
        f"(default:{MAX_BATCH})",
    )  # fmt: skip
    engine.add_argument(
        "--prefix-cache", type=size, metavar="SIZE",
        help="kogpt: memory for the prompts' keys and values kept for reuse (a shared few-shot preamble is "
        "fed once), like 2GiB; 0: off (default: a tenth of the memory available at start, at most 8GiB)",
    )  # fmt: skip
    engine.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        metavar="N",
        help="vllm: GPUs per model replica, 1, 2, 4, 8 or 16",
    )
    engine.add_argument(
        "--pipeline-parallel-size", type=int, default=1, metavar="M", help="vllm: pipeline stages (nodes)"
    )
    flags.add_model_arguments(parser)
    flags.add_sampling_arguments(parser.add_argument_group("sampling defaults (a request's own fields win)"))
    return parser
