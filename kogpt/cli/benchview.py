"""What `kogpt bench` prints: a rich table in the terminal, or markdown for an issue, or JSON.

Every form names the machine (CPU, its flags, cores, memory), torch and kogpt versions, the OpenMP
settings and each format's kernel, so that a figure is never read without its machine.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table
from rich.text import Text


@contextmanager
def progress(console: Console, what: str):
    """A spinner on stderr while one format is measured (a plain line when stderr is not a terminal)."""
    if not console.is_terminal:
        console.print(Text(what + " ..."), soft_wrap=True)
        yield
        return
    with console.status(Text(what + " ..."), spinner="dots"):
        yield


def about(report: dict) -> str:
    """One line: the date, the machine, the versions, the settings every row shares."""
    m = report["machine"]
    omp = ", ".join(f"{name}={value}" for name, value in report["omp"].items())
    runs = f"{report['repetitions']} run" + ("s" if report["repetitions"] > 1 else "")
    capability = f" ({report['torch_cpu_capability']})" if report.get("torch_cpu_capability") else ""
    return (
        f"{report['date']}; {m['cpu']}, {m['cores']} cores / {m['cpus']} CPUs, {m['ram_gib']} GiB; "
        f"flags: {' '.join(m['flags']) or 'none of AVX2/AVX-512/VNNI/BF16/AMX'}; "
        f"torch {report.get('torch') or '?'}{capability}, kogpt {report['kogpt']}; {omp or 'OpenMP defaults'}; "
        f"model {report['model']} (context {report['context']}); tokens/s, median (min) of {runs}"
    )


def rate(value: float) -> str:
    """Tokens/s with three significant digits or so: 18194, 59.2, 2.82."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def cell(test: dict | None, between: str = " ") -> str:
    """`median (min)`: the median run, and the slowest."""
    return f"{rate(test['median'])}{between}({rate(test['min'])})" if test else "-"


def rows(report: dict, between: str = " ") -> tuple[list[str], list[list[str]]]:
    """The table's header and rows, as text: one row per format."""
    header = ["format", "kernel", *report["tests"], "peak RSS", "start"]
    body = []
    for r in report["results"]:
        if "error" in r:
            body.append([r["quantize"], "failed: " + r["error"], *[""] * (len(header) - 2)])
            continue
        fmt = r["quantize"] if r["quantize"] != "none" else f"none ({r['dtype']})"
        kernel = r["kernel"] or "torch"
        body.append([fmt, kernel, *(cell(r["tests"].get(name), between) for name in report["tests"]),
                     f"{r['peak_rss_gib']:.2f} GiB", f"{r['start_s']:.1f} s"])  # fmt: skip
    return header, body


def markdown(report: dict) -> str:
    header, body = rows(report)
    align = ["---", "---", *["---:"] * (len(header) - 2)]
    lines = [about(report), "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(text.replace("|", "\\|") for text in row) + " |" for row in body]
    return "\n".join(lines)


def show(report: dict, console: Console, as_json: bool = False, as_markdown: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(report)) if console.is_terminal else console.file.write(json.dumps(report) + "\n")
        return
    if as_markdown:
        console.print(Text(markdown(report)), soft_wrap=True)
        return
    header, body = rows(report, between="\n")
    table = Table(title=Text(about(report)), title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in body:
        table.add_row(*(Text(text) for text in row))
    console.print(table)
