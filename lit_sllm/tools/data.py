"""`lit-sllm data`: write WebDataset shard sets from a JSONL manifest, a LibriSpeech split or a chat JSONL, and
inspect them.

Each writing command prints one summary line (samples written, hours, skips by reason with their locations) and exits
non-zero only when its input cannot be used at all (a missing file, an existing shard set, a bad option).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lit_sllm.config_errors import ConfigError
from lit_sllm.tools import tune_batches

TTS_ENGINES = ("espeak",)


def run_write(args: argparse.Namespace) -> Any:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.converters.manifest import write_manifest

    return write_manifest(args.manifest, args.out, args.name, args.shard_size, args.workers, args.sample_rate)


def run_librispeech(args: argparse.Namespace) -> Any:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.converters.librispeech import librispeech_to_samples
    from lit_sllm.data.shards import SkipLog, write_samples

    skips = SkipLog()
    samples = librispeech_to_samples(args.root, skips)
    return write_samples(samples, args.out, args.name or Path(args.root).resolve().name, args.shard_size, skips)


def run_chat(args: argparse.Namespace) -> Any:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.converters.chat import chat_to_samples
    from lit_sllm.data.shards import SkipLog, write_samples
    from lit_sllm.data.tts import EspeakTTS

    skips = SkipLog()
    tts = EspeakTTS(voice=args.voice, sample_rate=args.sample_rate) if args.tts == "espeak" else None
    samples = chat_to_samples(args.jsonl, tts, args.speech_turns, args.seed, skips)
    return write_samples(samples, args.out, args.name or Path(args.jsonl).stem, args.shard_size, skips)


def run_inspect(args: argparse.Namespace) -> int:
    """Prints the report; always exits 0, since bad members are part of what is reported. With --augment, writes
    augmented examples instead (exit 1 when the config gives none)."""
    if args.augment:
        return run_inspect_augment(args)
    if not args.shards:
        print("lit-sllm data inspect: give shards to inspect, or --augment YAML.", file=sys.stderr)
        return 2
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.inspect import format_report, inspect_shards

    report = inspect_shards(args.shards, sample_rate=args.sample_rate)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def run_inspect_augment(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.inspect_augment import write_examples

    try:
        result = write_examples(args.augment, args.out, args.source, args.examples, args.each, args.seed)
    except (ConfigError, OSError, ImportError) as err:
        print(f"lit-sllm data inspect: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for example in result["examples"]:
        before, after = example["seconds"]
        applied = ", ".join(example["applied"]) or "nothing"
        print(f"{example['key']}: {applied} ({before:.2f} s -> {after:.2f} s) -> {example['augmented']}")
    print(f"spectrograms of source {result['source']}: {result['png']}")
    return 0


def reporting(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Runs a write command, prints its summary line, and turns unusable input into exit code 1 with the reason."""

    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            result = command(args)
        except (OSError, ValueError, RuntimeError) as err:
            print(f"lit-sllm data {args.data_command}: {err}", file=sys.stderr)
            return 1
        print(result.summary())
        return 0

    return run


def speech_turns_arg(value: str) -> str:
    """argparse type for --speech-turns: "first", "all" or a probability (checked by the library's own picker)."""
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.converters.chat import speech_turn_picker

    try:
        speech_turn_picker(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return value


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the shards and index.json (must not hold a set)")
    parser.add_argument("--name", default=None, help="shard file prefix (default: from the input's name)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="write and inspect WebDataset shard sets", description=__doc__)
    commands = parser.add_subparsers(dest="data_command", required=True)

    write = commands.add_parser("write", help="shards from a JSONL manifest of schema samples with audio files")
    write.add_argument("--manifest", required=True, help="JSONL: schema sample + 'audio' {part: file} per line")
    add_output_arguments(write)
    write.add_argument("--workers", type=int, default=1, help="processes reading and encoding audio")
    write.add_argument("--sample-rate", type=int, default=None, help="resample audio to this rate (default: keep)")
    write.set_defaults(func=reporting(run_write))

    libri = commands.add_parser("librispeech", help="ASR shards from a LibriSpeech split folder")
    libri.add_argument("--root", required=True, help="split folder, e.g. LibriSpeech/train-clean-100")
    add_output_arguments(libri)
    libri.set_defaults(func=reporting(run_librispeech))

    chat = commands.add_parser("chat", help="text (or, with --tts, mixed speech/text) shards from chat JSONL")
    chat.add_argument("--jsonl", required=True, help="ShareGPT ('conversations') or OpenAI ('messages') JSONL")
    add_output_arguments(chat)
    chat.add_argument("--tts", choices=TTS_ENGINES, default=None, help="speak user turns with this TTS")
    chat.add_argument("--speech-turns", type=speech_turns_arg, default="first", help="first, all, or a probability")
    chat.add_argument("--voice", default="en-us", help="TTS voice")
    chat.add_argument("--sample-rate", type=int, default=16000, help="TTS output rate in Hz")
    chat.add_argument("--seed", type=int, default=0, help="seed of the probabilistic speech-turn pick")
    chat.set_defaults(func=reporting(run_chat))
    inspect = commands.add_parser(
        "inspect", help="count samples, hours, tasks and skipped members of a shard set, or hear its augmentation"
    )
    inspect.add_argument("shards", nargs="*", help="a directory, index.json, glob, brace pattern or pipe: URL")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--sample-rate", type=int, default=16000, help="rate audio is decoded at (Hz)")
    augment = inspect.add_argument_group("augmented examples (WAVs before/after and a spectrogram PNG)")
    augment.add_argument(
        "--augment", action="append", metavar="YAML", help="experiment YAML with data.train.<name>.augment (repeat "
        "to compose, as with `lit-sllm fit --config`)"
    )  # fmt: skip
    augment.add_argument("--source", default=None, help="train source to show (default: the first augmented one)")
    augment.add_argument("--out", default="augment_examples", help="folder for the WAVs and spectrograms.png")
    augment.add_argument("--examples", type=int, default=4, help="samples to show")
    augment.add_argument("--each", action="store_true", help="every transform alone (p=1), one sample each")
    augment.add_argument("--seed", type=int, default=0, help="seed of the draws")
    inspect.set_defaults(func=run_inspect)
    tune_batches.add_parser(commands)
