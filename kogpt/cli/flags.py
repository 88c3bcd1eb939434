"""The flags every subcommand shares: the model, its revision, device and dtype, the hardware flags
(--device-map, --max-memory, --offload-dir, --quantize, --plan), and loading the model they ask for;
and the sampling flags, which the REPL and `kogpt serve` share."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from kogpt.defaults import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    DEVICE_MAP_STRATEGIES,
    DEVICES,
    DTYPE_CHOICES,
    QUANTIZE_CHOICES,
    REVISIONS,
)
from kogpt.errors import KoGPTError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from kogpt.placement.options import Options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the placement and quantization flags to `parser`."""
    group = parser.add_argument_group("smaller hardware")
    group.add_argument(
        "--device-map",
        choices=DEVICE_MAP_STRATEGIES,
        help="split the model over the GPUs, then the CPU, then --offload-dir (auto = balanced over GPUs)",
    )
    group.add_argument(
        "--model-parallel",
        action="store_true",
        help="same as --device-map balanced (the original KoGPT's flag, kept for compatibility)",
    )
    group.add_argument(
        "--max-memory",
        metavar="SPEC",
        help="memory each device may use for weights and KV cache, e.g. 0=10GiB,1=10GiB,cpu=30GiB",
    )
    group.add_argument("--offload-dir", metavar="DIR", help="put the weights that fit nowhere in memory here (slow)")
    group.add_argument(
        "--quantize",
        default="none",
        choices=QUANTIZE_CHOICES,
        help="weight quantization: int8 or int4 (GPU: bitsandbytes; CPU: kogpt's fastest kernel here); default none",
    )
    group.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads that compute (default: the physical cores)",
    )
    group.add_argument(
        "--no-cache",
        action="store_true",
        help="convert the weights in memory; neither read nor write the converted-weights cache (kogpt cache list)",
    )
    group.add_argument(
        "--no-mmap",
        action="store_true",
        help="read the converted weights into memory instead of mapping the cache file: a slower start, "
        "but the OS cannot page weights out mid-generation",
    )
    group.add_argument(
        "--no-compile",
        action="store_true",
        help="CUDA: do not compile the decoding step with torch.compile (starts faster, decodes slower)",
    )
    group.add_argument(
        "--plan", action="store_true", help="print where each block would go and the memory it needs, then exit"
    )


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def options_from_args(args: argparse.Namespace) -> Options:
    """The one `Options` the flags ask for; conflicting flags raise KoGPTError."""
    from kogpt.placement.options import Options, parse_max_memory

    device_map = args.device_map
    if args.model_parallel:
        if device_map not in (None, "balanced"):
            raise KoGPTError(
                f"--model-parallel means --device-map balanced; it cannot be used with --device-map {device_map}"
            )
        device_map = "balanced"
    return Options(
        model=args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        device_map=device_map,
        max_memory=parse_max_memory(args.max_memory),
        offload_dir=args.offload_dir,
        quantize=args.quantize,
        threads=args.threads,
        cache=not args.no_cache,
        mmap=not args.no_mmap,
    )



def refuse_ignored_by_plan(args: argparse.Namespace, dests: tuple[str, ...]) -> None:
    """`--plan` loads nothing and generates nothing: refuse, in one line, the flags it would ignore."""
    given = [dest for dest in dests if getattr(args, dest, None) not in (None, False)]
    if given:
        flags = ", ".join("-p/--prompt" if d == "prompt" else "--" + d.replace("_", "-") for d in given)
        raise KoGPTError(f"--plan only prints the plan, so it cannot be used with {flags}")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and place the model (shared by the REPL and `kogpt eval`), and --debug."""
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
    add_arguments(parser)
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="let a checkpoint run its own Python code (off: never)"
    )


def quiet_libraries(debug: bool) -> None:
    """Library warnings (hub retries, generation notes) only with --debug; our own lines say what failed."""
    import huggingface_hub
    import transformers

    if not debug:
        transformers.utils.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_model(args: argparse.Namespace, renderer, before_loading=None):
    """The model the `add_model_arguments` flags ask for, with a spinner while it loads.

    `before_loading(path)`, if given, runs once the checkpoint directory is known and before the
    weights load: checks that need only its tokenizer fail there, in seconds rather than minutes.
    """
    from kogpt.api import KoGPT
    from kogpt.loading.checkpoint import resolve_checkpoint
    from kogpt.placement.decide import check_early

    quiet_libraries(args.debug)
    options = options_from_args(args)
    check_early(options)  # impossible flag combinations, before any download
    path = resolve_checkpoint(options.model, options.revision)  # a download shows its own progress bars
    if before_loading is not None:
        before_loading(path)
    with renderer.loading(options.model):
        return KoGPT.from_options(options, path, compile=not getattr(args, "no_compile", False))


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


def add_sampling_arguments(group) -> None:
    """The sampling flags (each validated as `/set` validates it) on an argparse parser or group."""
    for flag, metavar in SAMPLING_FLAGS.items():
        name = flag[2:].replace("-", "_")
        group.add_argument(flag, dest=name, metavar=metavar, type=setting_type(name), help=setting_help(name))
    group.add_argument(
        "--stop", action="append", metavar="TEXT", type=escaped, help="stop sequence, escapes allowed (\\n); repeatable"
    )
    group.add_argument("--truncate", action="store_true", default=None, help=setting_help("truncate"))


def setting_help(name: str) -> str:
    from kogpt.settings import HELP

    return HELP[name]


def sampling_settings(args: argparse.Namespace):
    from dataclasses import fields

    from kogpt.settings import SamplingSettings

    given = {f.name: getattr(args, f.name) for f in fields(SamplingSettings) if getattr(args, f.name, None) is not None}
    return SamplingSettings(**given)
