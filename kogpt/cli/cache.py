"""`kogpt cache list|clear`: the converted-weights cache and the kernel choices, shown or removed."""

from __future__ import annotations

import argparse
import shutil

from rich.text import Text


def build_parser() -> argparse.ArgumentParser:
    from kogpt.cli.parser import Parser, command_name

    parser = Parser(
        prog=f"{command_name()} cache",
        description="The converted-weights cache: CPU weights already cast or quantized, mapped at the next start.",
    )
    parser.add_argument("action", choices=("list", "clear"), help="list: show the files and the disk they use; clear: delete them")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging and full tracebacks")
    return parser


def run(args: argparse.Namespace, renderer) -> int:
    from kogpt.loading import cache, choices

    console = renderer.out
    root = cache.directory()
    if args.action == "clear":
        files, total = cache.clear(root)
        choices.choices_file().unlink(missing_ok=True)
        console.print(Text(f"removed {files} file(s), {cache.size_text(total)}, from {root}; kernels are measured again at the next load"))
        return 0
    found = cache.entries(root)
    for path, size in found:
        note = "  (unfinished write: `kogpt cache clear` removes it)" if path.name.endswith(".partial") else ""
        console.print(Text(f"{cache.size_text(size):>10}  {path.name}{note}"))
    total = sum(size for _, size in found)
    existing = root if root.exists() else next((p for p in root.parents if p.exists()), root.anchor)
    free = shutil.disk_usage(existing).free
    console.print(Text(f"{len(found)} file(s), {cache.size_text(total)} in {root} ({free / 2**30:.1f} GiB free on that disk)"))
    return 0
