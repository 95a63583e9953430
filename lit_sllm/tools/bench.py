"""`lit-sllm bench NAME ...`: run benchmarks and write `<out>/NAME.json` (figures, goal, machine, versions, commit).

Names: padding, data, augment, step, kd, startup (CPU; `cpu` runs all six) and gpu (skipped without a CUDA GPU).
`--quick` runs tiny sizes (the smoke test); `--table` prints the README tables of the results in `--out`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lit_sllm.bench import BENCHMARKS, GROUPS
from lit_sllm.bench.report import results_markdown


def benchmark_name(value: str) -> str:
    """argparse type: a benchmark or group name."""
    if value not in BENCHMARKS and value not in GROUPS:
        raise argparse.ArgumentTypeError(f"unknown benchmark {value!r}; choose from {[*BENCHMARKS, *GROUPS]}")
    return value


def run(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.bench.runner import expand, run_benchmark

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.names and not args.table:
        print("lit-sllm bench: name a benchmark or pass --table.", file=sys.stderr)
        return 2
    for name in expand(args.names):
        path = run_benchmark(name, args.quick, args.out)
        print(f"{name}: skipped (see the warning above)" if path is None else f"{name}: wrote {path}")
    if args.table:
        try:
            print(results_markdown(args.out), end="")
        except FileNotFoundError as err:
            print(f"lit-sllm bench: {err}", file=sys.stderr)
            return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="speed benchmarks against baselines", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", type=benchmark_name, help=f"any of {[*BENCHMARKS, *GROUPS]}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for the smoke test)")
    parser.add_argument("--out", default="bench/results", help="folder for NAME.json (default: bench/results)")
    parser.add_argument("--table", action="store_true", help="print the README tables of the results in --out")
    parser.set_defaults(func=run)
