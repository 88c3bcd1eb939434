"""`python -m kogpt`: the argument parser and `main()`, the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from kogpt.cli import flags
from kogpt.defaults import VERSION
from kogpt.errors import KoGPTError, Terminated

log = logging.getLogger("kogpt")

DEBUG_FORMAT = "[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"
SAMPLING_FLAGS = {  # flag -> metavar; each flag's dest is its setting's name
    "--temperature": "T",
    "--max-length": "N",
    "--max-new-tokens": "N",
    "--top-p": "P",
    "--top-k": "K",
    "--repetition-penalty": "R",
    "--no-repeat-ngram-size": "N",
    "--seed": "S",
    "--num-return-sequences": "N",
}


def setting_type(name: str):
    """An argparse type that validates a flag exactly as `/set name` does."""
    from kogpt.settings import InputError, parse_setting

    def parse(text: str):
        try:
            return parse_setting(name, text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def escaped(text: str) -> str:
    """One `--stop` sequence: escapes decoded, then checked as `/set stop` and JSON's are."""
    from kogpt.settings import InputError, check_value, decode_escapes
    from kogpt.text import check

    try:
        return check_value("stop", decode_escapes(check(text, "the stop sequence")))[0]
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = flags.Parser(
        prog="KoGPT inference",
        description="KakaoBrain Korean(hangul) Generative Pre-Training Model",
        epilog="few-shot evaluation: kogpt eval {nsmc,ynat,klue-sts} --data FILE (see kogpt eval --help)",
    )
    flags.add_model_arguments(parser)
    parser.add_argument("--version", action="version", version=f"kogpt {VERSION}")

    sampling = parser.add_argument_group("sampling (in the REPL: /set NAME VALUE)")
    for flag, metavar in SAMPLING_FLAGS.items():
        name = flag[2:].replace("-", "_")
        sampling.add_argument(flag, dest=name, metavar=metavar, type=setting_type(name), help=setting_help(name))
    sampling.add_argument(
        "--stop", action="append", metavar="TEXT", type=escaped, help="stop sequence, escapes allowed (\\n); repeatable"
    )
    sampling.add_argument("--truncate", action="store_true", default=None, help=setting_help("truncate"))

    repl = parser.add_argument_group("interactive session")
    repl.add_argument("--quick", action="store_true", help="skip the temperature and max_length questions")
    repl.add_argument("--no-transcript", action="store_true", help="do not append completions to the transcript")

    script = parser.add_argument_group("scripting (generate, print to stdout, exit)")
    source = script.add_mutually_exclusive_group()
    source.add_argument("-p", "--prompt", metavar="TEXT", help="complete TEXT once; - reads standard input")
    source.add_argument("--prompt-file", metavar="FILE", help="complete the whole FILE once; - reads standard input")
    source.add_argument("--prompts-file", metavar="FILE", help="one prompt per line, or JSON Lines with a prompt field")
    script.add_argument("--json", action="store_true", help="print JSON Lines: prompt, completion, settings, figures")
    return parser


def setting_help(name: str) -> str:
    from kogpt.settings import HELP

    return HELP[name]


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time, so that while rich's loading spinner has
    redirected it, log lines are printed above the spinner instead of through it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(debug: bool) -> None:
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter(DEBUG_FORMAT if debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        logging.getLogger("transformers").setLevel(logging.INFO)


def sampling_settings(args: argparse.Namespace):
    from dataclasses import fields

    from kogpt.settings import SamplingSettings

    given = {f.name: getattr(args, f.name) for f in fields(SamplingSettings) if getattr(args, f.name, None) is not None}
    return SamplingSettings(**given)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, runner = build_parser(), run
    if argv[:1] == ["eval"]:
        from kogpt.cli import evaluate

        parser, runner, argv = evaluate.build_parser(), evaluate.run, argv[1:]
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    from kogpt.cli.render import Renderer

    renderer = Renderer()
    install_signal_handlers()
    try:
        return runner(args, renderer)
    except KoGPTError as exc:
        if args.debug:
            log.exception("failed")
        renderer.error(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except Terminated as exc:
        return 128 + exc.signum
    except BrokenPipeError:  # `kogpt -p ... | head -1`: the reader left; end quietly
        _silence(sys.stdout)
        return 141


STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP (the terminal closed) end the program as Ctrl-C does: the generation
    stops, its partial record is written, then the exit code is 128 + the signal's number."""
    for name in STOP_SIGNALS:
        if hasattr(signal, name):  # no SIGHUP on Windows
            signal.signal(getattr(signal, name), _terminate)


def _terminate(signum, frame) -> None:
    # Only the first: a second signal must not interrupt the writing of the partial record.
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if signum == getattr(signal, "SIGHUP", None):  # the terminal is gone: writing to it would fail
        _silence(*(s for s in (sys.stdin, sys.stdout, sys.stderr) if _is_terminal(s)))
    from prompt_toolkit.application import get_app_or_none

    app = get_app_or_none()
    if app is not None and app.is_running and app.loop is not None:
        # At a question: raised here, inside prompt_toolkit's event loop (blocked in select), the
        # exception would wait for the next key press; ending the prompt with it, through the
        # loop's wake-up pipe, returns at once.
        app.loop.call_soon_threadsafe(_end_prompt, app, signum)
        return
    raise Terminated(signum)


def _end_prompt(app, signum: int) -> None:
    if app.is_running and app.future is not None and not app.future.done():
        app.exit(exception=Terminated(signum))


def _is_terminal(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _silence(*streams) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass


def run(args: argparse.Namespace, renderer) -> int:
    if args.plan:
        flags.quiet_libraries(args.debug)
        from kogpt.cli.planview import show_plan

        with warnings.catch_warnings():
            if not args.debug:  # library warnings (accelerate's) only with --debug
                warnings.simplefilter("ignore")
            return show_plan(flags.options_from_args(args), renderer.out)
    settings = sampling_settings(args)
    prompts = scripted_prompts(args, settings)  # read (and check) input before the slow load
    if prompts is not None:
        check_prompts(args, prompts, renderer)
    else:
        warn_locale(renderer)
    gpt = flags.load_model(args, renderer)
    if prompts is not None:
        from kogpt.cli.scripting import run_batch

        return run_batch(gpt, prompts, renderer, args.json)
    return interactive(args, gpt, renderer, settings)


def scripted_prompts(args: argparse.Namespace, settings):
    """The (label, prompt, settings) list of a scripting mode, or None for the interactive REPL."""
    from kogpt.cli.scripting import parse_prompts_file, read_text

    if args.prompt is not None:
        from kogpt.text import check

        return [("", read_text("-") if args.prompt == "-" else check(args.prompt, "-p"), settings)]
    if args.prompt_file is not None:
        return [("", read_text(args.prompt_file), settings)]
    if args.prompts_file is not None:
        name = args.prompts_file
        return [(f"{name}:{n}", p, s) for n, p, s in parse_prompts_file(read_text(name), name, settings)]
    return None


def check_prompts(args: argparse.Namespace, prompts, renderer) -> None:
    """What the tokenizer alone can tell (an empty prompt, one too long for the context, a limit
    above the context), for every prompt, before the minutes a model load takes."""
    from kogpt.api import encode
    from kogpt.loading.checkpoint import load_config, load_tokenizer, resolve_checkpoint
    from kogpt.placement.decide import check_early
    from kogpt.budget import fit_prompt
    from kogpt.settings import InputError

    flags.quiet_libraries(args.debug)
    options = flags.options_from_args(args)
    check_early(options)  # impossible flag combinations, before any download
    path = resolve_checkpoint(options.model, options.revision)
    config = load_config(path, args.trust_remote_code)
    tokenizer = load_tokenizer(path, config.vocab_size, args.trust_remote_code)
    failures = []
    for label, prompt, settings in prompts:
        try:
            fit_prompt(encode(tokenizer, prompt), settings, config.n_positions, announce=False)
        except InputError as exc:
            failures.append(f"{label}: {exc}" if label else str(exc))
    for line in failures[:-1]:
        renderer.error(f"error: {line}")
    if failures:
        raise KoGPTError(failures[-1] + (f" ({len(failures)} prompts failed; nothing was generated)"
                                         if len(failures) > 1 else ""))


def warn_locale(renderer, environ=None) -> None:
    """One line when the terminal's locale is not UTF-8: Korean would not type or show right."""
    if not (sys.stdin.isatty() or sys.stdout.isatty()):
        return
    name, value = locale_setting(environ)
    if "utf-8" not in value.lower().replace("utf8", "utf-8"):
        renderer.warning(
            f"the terminal's locale ({name}={value or 'unset'}) is not UTF-8: Korean may not type or show "
            "right; set LANG=C.UTF-8 (or ko_KR.UTF-8) and start kogpt again"
        )


def locale_setting(environ=None) -> tuple[str, str]:
    """The variable that sets the character encoding (LC_ALL, LC_CTYPE or LANG) and its value, as
    the user set it: for a C or unknown locale, Python itself sets LC_CTYPE=C.UTF-8 (PEP 538), so
    the environment the process started with is read where Linux keeps it."""
    env = environ if environ is not None else _initial_environment()
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        if env.get(name):
            return name, env[name]
    return "LANG", ""


def _initial_environment() -> dict[str, str]:
    try:
        with open("/proc/self/environ", "rb") as f:
            pairs = (entry.partition(b"=") for entry in f.read().split(b"\0") if b"=" in entry)
            return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, _, v in pairs}
    except OSError:  # not Linux: Python's own coercion is then rare
        return dict(os.environ)


def interactive(args: argparse.Namespace, gpt, renderer, settings) -> int:
    from platformdirs import user_data_dir, user_state_dir

    from kogpt.cli.repl import PlainInput, Repl
    from kogpt.transcript import Transcript

    transcript_path = None if args.no_transcript else Path(user_data_dir("kogpt")) / "transcript.jsonl"
    plain = None if sys.stdin.isatty() else PlainInput(sys.stdin, sys.stdout)
    repl = Repl(
        gpt,
        renderer,
        settings,
        quick=args.quick,
        history_path=Path(user_state_dir("kogpt")) / "history",
        transcript=Transcript(transcript_path, renderer.warning),
        plain=plain,
    )
    return repl.run()
