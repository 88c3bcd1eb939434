"""`kogpt eval {nsmc,ynat,klue-sts} --data FILE ...`: its parser and `run()`; `kogpt.cli.main` dispatches here."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kogpt.errors import KoGPTError
from kogpt.evaluate.templates import TASKS, Task, Template

if TYPE_CHECKING:  # torch stays unimported for --help and --show-prompt
    from kogpt.api import KoGPT
    from kogpt.cli.render import Renderer
    from kogpt.evaluate.data import Dataset
    from kogpt.evaluate.runner import Outcome

log = logging.getLogger(__name__)

DEFAULT_SHOTS = 5
DEFAULT_SEED = 1234
DEFAULT_BATCH_SIZE = 8


def count(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more")
        return value

    parse.__name__ = "integer"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The parser of `kogpt eval`; the model flags are the REPL's own (`kogpt.cli.add_model_arguments`)."""
    from kogpt.cli.flags import add_model_arguments
    from kogpt.cli.parser import Parser, command_name

    parser = Parser(
        prog=f"{command_name()} eval",
        description="Few-shot evaluation: each label is scored by the model's log-likelihood of its "
        "continuation after the prompt (no sampling); the most likely label is the answer.",
    )
    parser.add_argument("task", choices=list(TASKS), help="nsmc (accuracy), ynat (macro-F1), klue-sts (F1)")
    parser.add_argument("--data", required=True, type=Path, metavar="FILE", help="the items to evaluate")
    parser.add_argument(
        "--train",
        type=Path,
        metavar="FILE",
        help="draw demonstrations from here (default: --data, never the item itself)",
    )
    parser.add_argument(
        "--shots",
        type=count(0),
        default=DEFAULT_SHOTS,
        metavar="K",
        help=f"demonstrations per item (default:{DEFAULT_SHOTS})",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="S", help=f"draws the demonstrations (default:{DEFAULT_SEED})"
    )
    parser.add_argument("--limit", type=count(1), metavar="N", help="evaluate only the first N items")
    parser.add_argument(
        "--batch-size",
        type=count(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"items per forward pass (default:{DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--normalize", choices=("none", "token", "char", "byte"), default="none",
        help="divide each label's log-likelihood by its length before choosing: tokens, characters "
        "(lm-eval's acc_norm) or UTF-8 bytes (acc_bytes); for labels of different lengths (default: none)",
    )  # fmt: skip
    parser.add_argument("--template", type=Path, metavar="FILE", help="a JSON prompt template (see --show-prompt)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--items", type=Path, metavar="FILE",
                        help="write each item's prompt, candidates, log-likelihoods and prediction to FILE (JSON Lines)")
    parser.add_argument(
        "--show-prompt",
        action="store_true",
        help="print the template and the first item's prompt, then exit (loads no model)",
    )
    add_model_arguments(parser)
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine", choices=("kogpt", "vllm"), default="kogpt",
        help="kogpt (built in) or vllm (GPUs: vLLM's prompt log-probabilities, same metrics)",
    )  # fmt: skip
    engine.add_argument("--tensor-parallel-size", type=count(1), default=1, metavar="N", help="vllm: GPUs per model")
    engine.add_argument("--pipeline-parallel-size", type=count(1), default=1, metavar="M", help="vllm: pipeline stages")
    return parser


def run(args: argparse.Namespace, renderer: Renderer) -> int:
    """Read the data, build the prompts, score them and print the results; returns the exit code."""
    from kogpt.cli import evalview as render
    from kogpt.evaluate import data as data_lib
    from kogpt.evaluate.fewshot import build
    from kogpt.evaluate.templates import load_template

    if args.show_prompt and args.plan:
        raise KoGPTError("--show-prompt and --plan both exit without scoring: choose one")
    if args.engine == "vllm" and not (args.show_prompt or args.plan):  # before any data is read
        from kogpt.loading.vllm import check_available, check_parallel

        check_parallel(args.tensor_parallel_size, args.pipeline_parallel_size)
        check_available()
    task = TASKS[args.task]
    template = load_template(task, args.template)
    data = data_lib.read(task.name, args.data)
    train = data_lib.read(task.name, args.train) if args.train is not None else None
    for dataset in filter(None, (data, train)):
        if dataset.skipped:
            log.warning("%s: skipped %d items with an empty text", dataset.path, dataset.skipped)
    prompts = build(template, data, train, args.shots, args.seed, args.limit)
    if args.show_prompt:
        render.show_prompt(renderer.out, task, template, prompts[0])
        return 0
    if args.plan:  # the inputs are checked above; the plan loads no weights
        from kogpt.cli import flags
        from kogpt.cli.planview import show_plan

        flags.quiet_libraries(args.debug)
        return show_plan(flags.options_from_args(args), renderer.out, as_json=args.json)

    from kogpt.cli.flags import load_model
    from kogpt.evaluate.runner import Stopped, evaluate, requests

    items = open_items(args.items)  # before the weights load: a path that cannot be written fails at once
    batch = []

    def check_prompts(path: Path) -> None:  # too long for the context? Said before the weights load.
        batch.extend(requests(tokenizer_only(path, args.trust_remote_code), task, template, prompts, str(data.path)))

    if args.engine == "vllm":
        from kogpt.evaluate import vllm

        gpt = vllm.load(
            args.model, args.revision, args.dtype, args.tensor_parallel_size, args.pipeline_parallel_size,
            args.trust_remote_code, before_loading=check_prompts,
        )  # fmt: skip
        scorer = gpt.scorer
    else:
        gpt, scorer = load_model(args, renderer, before_loading=check_prompts), None
    texts = [template.choices[label] for label in task.labels]
    try:
        with render.progress(renderer.err, len(prompts), task.name) as advance:
            outcome = evaluate(gpt, task, prompts, batch, args.batch_size, advance=advance, scorer=scorer,
                               normalize=args.normalize, texts=texts)
    except Stopped as stop:  # Ctrl-C: the metrics of the items done, marked interrupted, then exit 130
        result = report(args, gpt, task, template, data, train, stop.outcome)
        result["interrupted"] = True
        renderer.error(f"interrupted: the results below are of the {len(stop.outcome.gold)} of {len(prompts)} items scored")
        (render.print_json if args.json else render.print_table)(renderer.out, result)
        raise KeyboardInterrupt from None
    if items is not None:
        from kogpt.evaluate import items as items_lib

        with items:
            items_lib.write(items, items_lib.records(task, prompts, batch, outcome, texts))
    result = report(args, gpt, task, template, data, train, outcome)
    (render.print_json if args.json else render.print_table)(renderer.out, result)
    return 0


def open_items(path: Path | None):
    """`--items FILE` opened for writing (truncated), or None."""
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise KoGPTError(f"--items {path}: cannot write it ({exc.strerror or exc})") from None


def tokenizer_only(path: Path, trust_remote_code: bool) -> KoGPT:
    """A `KoGPT` holding the checkpoint's tokenizer and context length but no weights: it encodes
    exactly as the loaded model will, so prompts are checked before the slow load."""
    from kogpt.api import KoGPT
    from kogpt.loading.checkpoint import load_config, load_tokenizer
    from kogpt.loading.load import Loaded

    config = load_config(path, trust_remote_code)
    tokenizer = load_tokenizer(path, config.vocab_size, trust_remote_code)
    return KoGPT(Loaded(None, tokenizer, None, str(path), 0, config.n_positions), static_cache=False)


def report(
    args: argparse.Namespace,
    gpt: KoGPT,
    task: Task,
    template: Template,
    data: Dataset,
    train: Dataset | None,
    outcome: Outcome,
) -> dict[str, Any]:
    """Everything needed to reproduce the run, and its results, as JSON-ready data."""
    import torch
    import transformers

    from kogpt.defaults import VERSION as __version__
    from kogpt.evaluate import metrics
    from kogpt.loading.checkpoint import looks_local

    def source(dataset: Dataset | None) -> dict[str, Any] | None:
        if dataset is None:
            return None
        return {
            "path": str(dataset.path),
            "sha256": dataset.sha256,
            "items": len(dataset.examples),
            "skipped": dataset.skipped,
        }

    matrix = outcome.matrix
    return {
        "task": task.name,
        "model": args.model,
        "revision": None if looks_local(args.model) else args.revision,
        "engine": getattr(args, "engine", "kogpt"),
        "source": gpt.loaded.source,
        "device": str(gpt.loaded.device),
        "dtype": str(gpt.loaded.dtype).removeprefix("torch."),
        "shots": args.shots,
        "seed": args.seed,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "normalize": getattr(args, "normalize", "none"),
        "interrupted": False,
        "template": template.as_dict(),
        "template_file": str(args.template) if args.template is not None else None,
        "data": source(data),
        "train": source(train),
        "metric": task.metric,
        "metrics": outcome.metrics,
        "counts": {"items": len(outcome.gold), "correct": sum(matrix[i][i] for i in range(len(matrix)))},
        "labels": {
            label: {
                "continuation": template.choices[label],
                "gold": sum(matrix[k]),
                "predicted": sum(row[k] for row in matrix),
                "f1": metrics.f1(matrix, k),
            }
            for k, label in enumerate(task.labels)
        },
        "confusion_matrix": matrix,
        "seconds": round(outcome.seconds, 3),
        "items_per_second": round(outcome.items_per_second, 3),
        "versions": {"kogpt": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }
