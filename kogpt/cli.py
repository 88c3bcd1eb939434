"""`python -m kogpt`: the argument parser and `main()`, the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kogpt import __version__
from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION, DEVICES, DTYPE_CHOICES, QUANTIZE_CHOICES, REVISIONS
from kogpt.errors import KoGPTError

log = logging.getLogger("kogpt")

DEBUG_FORMAT = "[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="KoGPT inference",
        description="KakaoBrain Korean(hangul) Generative Pre-Training Model",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"huggingface repo or local directory (default:{DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--revision",
        default=DEFAULT_REVISION,
        choices=REVISIONS,
        help=f"hub revision; ignored for a local directory (default:{DEFAULT_REVISION})",
    )
    parser.add_argument("--device", default="cuda", choices=DEVICES, help="(default:cuda; the CPU when CUDA is missing)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="compute dtype (default:auto: float16 on GPUs, float32 or bfloat16 on CPUs by memory)",
    )
    parser.add_argument(
        "--quantize",
        default="none",
        choices=QUANTIZE_CHOICES,
        help="weight quantization (default:none; int8: CPU only, about half the memory of bfloat16 and faster)",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"kogpt {__version__}")
    return parser


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(DEBUG_FORMAT if debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        logging.getLogger("transformers").setLevel(logging.INFO)


def history_path() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir("kogpt")) / "history"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    from kogpt.render import Renderer

    renderer = Renderer()
    try:
        return run(args, renderer)
    except KoGPTError as exc:
        if args.debug:
            log.exception("failed")
        renderer.error(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace, renderer) -> int:
    import transformers

    from kogpt.api import KoGPT
    from kogpt.model import resolve_checkpoint
    from kogpt.repl import PlainInput, Repl

    if not args.debug:
        transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    path = resolve_checkpoint(args.model, args.revision)  # a download shows its own progress bars
    with renderer.loading(args.model):
        gpt = KoGPT.load(str(path), args.revision, args.device, args.dtype, args.quantize)
    plain = None if sys.stdin.isatty() else PlainInput(sys.stdin, sys.stdout)
    return Repl(gpt, renderer, history_path(), plain).run()
