"""`python -m kogpt`: the argument parser and `main()`, the one place errors become exit codes."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import warnings
from pathlib import Path

from kogpt.cli import flags, terminal
from kogpt.cli.flags import escaped, sampling_settings, setting_type  # noqa: F401 (also reached as cli.main.*)
from kogpt.cli.parser import Parser, command_name
from kogpt.defaults import VERSION
from kogpt.errors import KoGPTError, Terminated

log = logging.getLogger("kogpt")

DEBUG_FORMAT = "[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"

# What --plan, which loads no model, would ignore: refused with it.
IGNORED_BY_PLAN = (
    "prompt",
    "prompt_file",
    "prompts_file",
    *(flag[2:].replace("-", "_") for flag in flags.SAMPLING_FLAGS),
    "stop",
    "truncate",
    "quick",
    "no_transcript",
)

USAGE = """%(prog)s [FLAGS]                                  the REPL, or -p/--prompts-file for scripts
       %(prog)s eval {nsmc,ynat,klue-sts} --data FILE [FLAGS]
       %(prog)s serve [FLAGS]
       %(prog)s cache {list,clear}"""


def build_parser() -> argparse.ArgumentParser:
    name = command_name()
    parser = Parser(
        prog=name,
        usage=USAGE.replace("%(prog)s", name),
        description="KoGPT inference: KakaoBrain Korean(hangul) Generative Pre-Training Model",
        top_level=True,
        epilog="few-shot evaluation: kogpt eval {nsmc,ynat,klue-sts} --data FILE (see kogpt eval --help); "
        "an OpenAI-compatible API: kogpt serve (see kogpt serve --help); "
        "the converted-weights cache: kogpt cache {list,clear}",
    )
    flags.add_model_arguments(parser)
    parser.add_argument("--version", action="version", version=f"kogpt {VERSION}")

    flags.add_sampling_arguments(parser.add_argument_group("sampling (in the REPL: /set NAME VALUE)"))

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


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time, so that while rich's loading spinner has
    redirected it, log lines are printed above the spinner instead of through it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Printable(logging.Formatter):
    """Log lines with terminal control characters shown as symbols: a path or a value quoted in a
    message never moves the cursor or retitles the window."""

    def format(self, record: logging.LogRecord) -> str:
        from kogpt.cli.render import printable

        return printable(super().format(record))


def setup_logging(debug: bool) -> None:
    handler = _CurrentStderr()
    handler.setFormatter(_Printable(DEBUG_FORMAT if debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        logging.getLogger("transformers").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, runner = build_parser(), run
    if argv[:1] == ["eval"]:
        from kogpt.cli import evaluate

        parser, runner, argv = evaluate.build_parser(), evaluate.run, argv[1:]
    elif argv[:1] == ["serve"]:
        from kogpt.cli import serve

        parser, runner, argv = serve.build_parser(), serve.run, argv[1:]
    elif argv[:1] == ["cache"]:
        from kogpt.cli import cache

        parser, runner, argv = cache.build_parser(), cache.run, argv[1:]
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    from kogpt.cli.render import Renderer

    renderer = Renderer()
    terminal.install_signal_handlers()
    try:
        code = runner(args, renderer)
        sys.stdout.flush()  # a full disk under `> file` shows here, not as a traceback at exit
        return code
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
        terminal.silence(sys.stdout)
        return 141
    except OSError as exc:  # a full disk or a failing device under `> FILE`: one line, exit 1
        if exc.errno not in WRITE_ERRORS:
            raise
        if args.debug:
            log.exception("failed")
        terminal.silence(sys.stdout)  # what is still buffered would fail again at exit
        where = f"to {exc.filename}" if exc.filename else "the output"
        renderer.error(f"error: cannot write {where}: {exc.strerror or exc}")
        return 1


# Errors of writing that the user must fix outside kogpt (a full disk or quota, a failing device).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def run(args: argparse.Namespace, renderer) -> int:
    if args.plan:
        flags.refuse_ignored_by_plan(args, IGNORED_BY_PLAN)
        flags.quiet_libraries(args.debug)
        from kogpt.cli.planview import show_plan

        with warnings.catch_warnings():
            if not args.debug:  # library warnings (accelerate's) only with --debug
                warnings.simplefilter("ignore")
            return show_plan(flags.options_from_args(args), renderer.out, as_json=args.json)
    settings = sampling_settings(args)
    prompts = scripted_prompts(args, settings)  # read (and check) input before the slow load
    if prompts is not None:
        check_prompts(args, prompts, renderer)
    else:
        terminal.warn_locale(renderer)
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
    from kogpt.encoding import encode_tail
    from kogpt.context import fit_prompt
    from kogpt.loading.checkpoint import load_config, load_tokenizer, resolve_checkpoint
    from kogpt.placement.decide import check_early
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
            ids, cut = encode_tail(tokenizer, prompt, config.n_positions + 1)  # remembered for the generation
            fit_prompt(ids, settings, config.n_positions, announce=False, cut=cut)
        except InputError as exc:
            failures.append(f"{label}: {exc}" if label else str(exc))
    for line in failures[:-1]:
        renderer.error(f"error: {line}")
    if failures:
        raise KoGPTError(failures[-1] + (f" ({len(failures)} prompts failed; nothing was generated)"
                                         if len(failures) > 1 else ""))


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
