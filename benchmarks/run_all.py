"""Run every benchmark in this folder, one after another, each in its own process.

Run it from the checkout::

    python benchmarks/run_all.py           # default sizes, about 7 minutes
    python benchmarks/run_all.py --full    # bench_pipeline at 2,000 emails, about 9 minutes
    python benchmarks/run_all.py pipeline growth   # only these (names without bench_)

The pipeline, memory and growth benchmarks run first, then every other
``bench_*.py`` here (rules, templates, …) in name order, each with its own defaults.
Each prints its own tables; this script adds a header and the time each took, and
exits 1 when any of them did (a benchmark exits 1 only when its results disagree).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ("bench_pipeline", "bench_memory", "bench_growth")
#: Extra arguments for ``--full``.
FULL = {"bench_pipeline": ["--messages", "2000"]}


def benchmarks() -> list[str]:
    """The benchmark scripts' names, in the order they run."""
    others = sorted(p.stem for p in HERE.glob("bench_*.py") if p.stem not in FIRST)
    return [name for name in FIRST if (HERE / f"{name}.py").exists()] + others


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit 1 if any exited non-zero."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--full", action="store_true", help="full sizes where they differ")
    parser.add_argument("only", nargs="*", help="run only these (e.g. pipeline growth)")
    args = parser.parse_args(argv)
    names = benchmarks()
    if args.only:
        wanted = {f"bench_{name.removeprefix('bench_')}" for name in args.only}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        names = [name for name in names if name in wanted]
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        extra = FULL.get(name, []) if args.full else []
        command = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"=== {name} {' '.join(extra)}".rstrip(), flush=True)
        begin = time.perf_counter()
        code = subprocess.run(command, check=False, cwd=HERE.parent).returncode
        print(f"=== {name}: exit {code}, {time.perf_counter() - begin:.0f} s", flush=True)
        print(flush=True)
        if code != 0:
            failed.append(name)
    total = time.perf_counter() - started
    print(f"{len(names)} benchmarks in {total:.0f} s; " + (f"FAILED: {failed}" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
