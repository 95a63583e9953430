"""`lit-sllm bench startup`: seconds until `lit-sllm --help` and `lit-sllm TOOL --help` answer, as a user types them.

Each command runs in a fresh interpreter (the installed `lit-sllm` script when it is on PATH next to this Python,
else `python -m lit_sllm.cli`), in rounds that rotate the order; the figure per command is its median over rounds.
A bare `python -c pass` runs in the same rounds, so the table also shows what the interpreter alone costs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lit_sllm.bench.common import Goal, Outcome, interleaved, spread, table
from lit_sllm.cli import TOOLS

GOAL_SECONDS = 1.5


@dataclass(frozen=True)
class StartupSettings:
    """Sizes of the startup benchmark.

    Attributes:
        rounds: runs of every command.
    """

    rounds: int = 7


QUICK = StartupSettings(rounds=2)


def cli_command() -> list[str]:
    """How a user starts the CLI: the console script installed beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("lit-sllm")
    if script.exists():
        return [str(script)]
    found = shutil.which("lit-sllm")
    return [found] if found else [sys.executable, "-m", "lit_sllm.cli"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else StartupSettings()
    cli = cli_command()
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "lit-sllm --help": [*cli, "--help"]}
    commands |= {f"lit-sllm {name} --help": [*cli, name, "--help"] for name in TOOLS}
    measured = interleaved({name: (lambda c=command: timed(c)) for name, command in commands.items()}, settings.rounds)
    figures = {name: spread(values) for name, values in measured.items()}
    slowest = max((name for name in figures if name.startswith("lit-sllm")), key=lambda n: figures[n]["median"])
    worst = figures[slowest]["median"]
    rows = [[name, f"{figure['median']:.2f}", f"{figure['min']:.2f}"] for name, figure in figures.items()]
    return Outcome(
        settings=asdict(settings) | {"command": cli},
        figures={"seconds": figures, "slowest": slowest},
        tables=[table("Seconds until the command answers (fresh process)", ["command", "median s", "min s"], rows)],
        goal=Goal(
            target=f"`lit-sllm --help` and every `lit-sllm TOOL --help` in <= {GOAL_SECONDS} s",
            measured=f"slowest {slowest}: {worst:.2f} s",
            met=worst <= GOAL_SECONDS,
        ),
    )
