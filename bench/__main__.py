"""`python -m bench` (`make bench`): every benchmark in bench/, one after another,
each in its own process, then one table of their figures.

A benchmark is any bench/<name>.py other than this runner and support.py; it
prints what it likes and ends with one or more FIGURE lines
(bench.support.figure_line), which are all the runner reads. Names given on
the command line run only those: `python -m bench engine_overhead`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.support import parse_figure

BENCH_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__", "support"}
# A benchmark that runs longer than this is stuck, not slow.
TIMEOUT_SECONDS = 30 * 60


def benchmark_names() -> list[str]:
    return sorted(
        path.stem
        for path in BENCH_DIR.glob("*.py")
        if path.stem not in NOT_BENCHMARKS and not path.stem.startswith("_")
    )


def run_benchmark(name: str) -> tuple[list[dict[str, str]], str | None]:
    """Its FIGURE lines, and why it failed (None when it did not). Its output is
    shown as it comes, indented under its name."""
    print(f"== {name}", flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=BENCH_DIR.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    figures = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(f"   {line}", end="", flush=True)
            figure = parse_figure(line.strip())
            if figure is not None:
                figures.append(figure)
        code = process.wait(timeout=TIMEOUT_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        process.wait()
        raise
    if code != 0:
        return figures, f"failed (exit {code})"
    if not figures:
        return figures, "printed no FIGURE line"
    return figures, None


def with_unit(value: str | None, unit: str | None) -> str:
    if not value:
        return ""
    return f"{value} {unit}" if unit else value


def table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("figure", "value", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    separator = "-+-".join("-" * width for width in widths)
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def main(argv: list[str]) -> int:
    available = benchmark_names()
    unknown = sorted(set(argv) - set(available))
    if unknown:
        print(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(available)})")
        return 2
    rows: list[tuple[str, str, str, str]] = []
    failures = 0
    for name in argv or available:
        figures, failure = run_benchmark(name)
        for figure in figures:
            unit = figure.get("unit")
            rows.append(
                (
                    figure["name"],
                    with_unit(figure["value"], unit),
                    with_unit(figure.get("baseline"), figure.get("baseline_unit", unit)),
                    f"{figure['ratio']}x" if figure.get("ratio") else "",
                )
            )
        if failure:
            failures += 1
            rows.append((name, failure, "", ""))
    print()
    print(table(rows))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
