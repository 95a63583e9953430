"""`lit-sllm sweep FILE`: expand a W&B sweep file into runs, locally or as a SLURM array, with no W&B server.

The same file serves `wandb sweep FILE` (online, W&B's agent) and this command (offline): `method: grid` gives the
cartesian product of every parameter's `values`; `method: random` draws `--count` runs (default: the file's
`run_cap`) from `values` and distributions, seeded. `command` follows W&B's macros (`${env}`, `${interpreter}`,
`${program}`, `${args}`, `${args_no_hyphens}`); each parameter becomes a `--key=value` override of
`lit-sllm fit`. Every run gets `LIT_SLLM_RUN_NAME=<sweep>-<index>` in its environment for the logger's name.
`--override KEY=VALUE` adds `--KEY=VALUE` to every run (`--override trainer.max_steps=3`: a short trial of the sweep).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]

# distribution name -> draw(spec, rng); the names and fields are W&B's.
DISTRIBUTIONS: dict[str, Callable[[dict, random.Random], Any]] = {
    "constant": lambda spec, rng: spec["value"],
    "categorical": lambda spec, rng: rng.choice(spec["values"]),
    "uniform": lambda spec, rng: rng.uniform(spec["min"], spec["max"]),
    "int_uniform": lambda spec, rng: rng.randint(spec["min"], spec["max"]),
    "log_uniform_values": lambda spec, rng: math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"]))),
    "q_uniform": lambda spec, rng: round(rng.uniform(spec["min"], spec["max"]) / spec.get("q", 1)) * spec.get("q", 1),
    "normal": lambda spec, rng: rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0)),
}


def load_sweep(path: str | Path) -> dict[str, Any]:
    # plain YAML: W&B's `${args}` macros are not OmegaConf interpolations
    sweep = yaml.safe_load(Path(path).read_text())
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict):
        raise ValueError(f"{path}: a sweep file needs a `parameters:` mapping (W&B sweep format).")
    if sweep.get("method", "grid") not in ("grid", "random"):
        raise ValueError(
            f"{path}: method '{sweep['method']}' cannot run offline; use grid or random (bayes needs W&B)."
        )
    return sweep


def _distribution(name: str, spec: dict) -> str:
    if "value" in spec:
        return "constant"
    if "values" in spec and "distribution" not in spec:
        return "categorical"
    kind = spec.get("distribution", "uniform")
    if kind not in DISTRIBUTIONS:
        raise ValueError(
            f"parameter '{name}': distribution '{kind}' is not supported offline; use {sorted(DISTRIBUTIONS)}."
        )
    return kind


def expand(sweep: dict[str, Any], count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's runs as dicts of parameter -> value, in a stable order."""
    params = sweep["parameters"]
    if sweep.get("method", "grid") == "grid":
        options = []
        for name, spec in params.items():
            kind = _distribution(name, spec)
            if kind not in ("constant", "categorical"):
                raise ValueError(
                    f"grid sweep: parameter '{name}' must list `values` (or one `value`), not a distribution."
                )
            options.append([spec["value"]] if kind == "constant" else list(spec["values"]))
        return [dict(zip(params, combo)) for combo in itertools.product(*options)]
    runs = count or sweep.get("run_cap")
    if not runs:
        raise ValueError("random sweep: give --count or `run_cap` in the sweep file.")
    rng = random.Random(seed)
    return [
        {name: DISTRIBUTIONS[_distribution(name, spec)](spec, rng) for name, spec in params.items()}
        for _ in range(runs)
    ]


def command_for(sweep: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The argv of one run, W&B command macros substituted."""
    args = [f"--{name}={value}" for name, value in run.items()]
    macros = {
        "${env}": [],
        "${interpreter}": [],
        "${program}": [sweep.get("program", "lit-sllm")],
        "${args}": args,
        "${args_no_hyphens}": [a[2:] for a in args],
    }
    argv: list[str] = []
    for token in sweep.get("command", DEFAULT_COMMAND):
        argv += macros.get(token, [token])
    return argv


def slurm_array(name: str, commands: list[list[str]], template: str | None) -> str:
    """An sbatch script that runs command number $SLURM_ARRAY_TASK_ID of the sweep."""
    header = Path(template).read_text() if template else "#!/bin/bash\n#SBATCH --job-name={name}\n"
    lines = "\n".join(f"  {i}) {shlex.join(c)} ;;" for i, c in enumerate(commands))
    body = (
        f"#SBATCH --array=0-{len(commands) - 1}\n"
        f"export LIT_SLLM_RUN_NAME={name}-$SLURM_ARRAY_TASK_ID\n"
        f'case "$SLURM_ARRAY_TASK_ID" in\n{lines}\nesac\n'
    )
    return header.replace("{name}", name).rstrip("\n") + "\n" + body


def run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file)
    name = sweep.get("name") or Path(args.file).stem
    extra = [f"--{override}" for override in args.override]
    commands = [command_for(sweep, r) + extra for r in expand(sweep, args.count, args.seed)]
    if args.slurm:
        script = slurm_array(name, commands, args.sbatch_template)
        if args.dry_run:
            print(script)
            return 0
        path = Path(f"{name}.sbatch")
        path.write_text(script)
        return subprocess.run(["sbatch", str(path)], check=False).returncode
    for index, command in enumerate(commands):
        print(shlex.join(command))
        if not args.dry_run:
            env = os.environ | {"LIT_SLLM_RUN_NAME": f"{name}-{index}"}
            code = subprocess.run(command, env=env, check=False).returncode
            if code != 0:
                print(f"run {index} failed with exit code {code}", file=sys.stderr)
                return code
    print(f"{len(commands)} runs", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="expand a W&B sweep file into runs (local or SLURM)", description=__doc__
    )
    parser.add_argument("file", help="W&B sweep YAML")
    parser.add_argument("--dry-run", action="store_true", help="print the runs instead of starting them")
    parser.add_argument("--slurm", action="store_true", help="write (and submit) a SLURM array job instead")
    parser.add_argument("--sbatch-template", help="sbatch header with #SBATCH lines; {name} is replaced")
    parser.add_argument("--count", type=int, help="runs of a random sweep (default: run_cap)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random sweep's draws")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="`--KEY=VALUE` added to every run"
    )
    parser.set_defaults(func=run)
