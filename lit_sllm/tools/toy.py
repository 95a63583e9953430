"""`lit-sllm toy build|report`: build the embedded toy world, or re-measure a built one.

`build` writes speech and text shard sets, the toy LLM and encoder, MTBI teacher labels, `report.json` and a
README into an empty folder (45 minutes measured on a busy 2-core machine; needs espeak-ng). `report` prints the
toy LLM's accuracy per text task (trained tasks and phrasings, held-out phrasings, held-out tasks) and the toy encoder's
greedy CTC WER on the toy test speech.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

DEFAULT_WORLD = "data_shards/toy"


def run_build(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.toy.build import build_world
    from lit_sllm.toy.report import format_figures

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        report = build_world(args.out, seed=args.seed)
    except (FileExistsError, RuntimeError) as err:  # a non-empty --out, or espeak-ng missing
        print(f"lit-sllm toy build: {err}", file=sys.stderr)
        return 1
    print(format_figures(report))
    print(
        f"toy world written to {args.out} ({report['total_bytes'] / 1e6:.1f} MB) in {report['seconds']['total']:.0f} s"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.toy.build import measure_world
    from lit_sllm.toy.report import format_figures

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        figures = measure_world(args.world, seed=args.seed, per_task=args.per_task)
    except FileNotFoundError as err:
        print(f"lit-sllm toy report: {err}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2) if args.json else format_figures(figures))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("toy", help="build the embedded toy world or measure it", description=__doc__)
    commands = parser.add_subparsers(dest="toy_command", required=True)
    build = commands.add_parser("build", help="build the toy world (speech, shards, LLM, encoder) into a folder")
    build.add_argument("--out", default=DEFAULT_WORLD, help="an empty or absent folder (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="seeds every sentence, utterance and model")
    build.set_defaults(func=run_build)
    report = commands.add_parser("report", help="the toy LLM's accuracy per task and the encoder's WER")
    report.add_argument("--world", default=DEFAULT_WORLD, help="a built toy world (default: %(default)s)")
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    report.add_argument("--per-task", type=int, default=50, help="test questions per task and group")
    report.add_argument("--seed", type=int, default=0, help="picks the test questions")
    report.set_defaults(func=run_report)
