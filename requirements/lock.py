"""The lock: every package of the dev environment at the version the suite was tested with.

    python requirements/lock.py compile [--upgrade]   re-lock (`make lock`; keeps existing pins unless --upgrade)
    python requirements/lock.py check                 the lock fits setup.cfg, and `pip check` passes
    python requirements/lock.py check --exact         ... and this environment holds exactly the locked versions

`setup.cfg` keeps compatible ranges for people who install the library into their own environment; the lock pins
the one tested set (Python 3.11, Linux x86_64) that `make demo`, `make test` and CI install through. Its header
records a digest of the requirement settings in `setup.cfg` and of `tools.in`, so a requirement changed without
re-locking fails `check`. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
TOOLS = ROOT / "requirements" / "tools.in"
SETUP = ROOT / "setup.cfg"
PROJECT = "lit-sllm"
PYTHON, PLATFORM = "3.11", "x86_64-manylinux_2_28"
DIGEST_LINE = "# requirements digest: "
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def requirements_digest() -> str:
    """sha256 of what decides the lock: setup.cfg's python_requires, install_requires and extras, and tools.in."""
    config = configparser.ConfigParser()
    config.read(SETUP)
    parts = [config.get("options", key, fallback="") for key in ("python_requires", "install_requires")]
    if config.has_section("options.extras_require"):
        parts += [f"{name}={value}" for name, value in sorted(config.items("options.extras_require"))]
    parts.append(TOOLS.read_text())
    return hashlib.sha256("\n".join(part.strip() for part in parts).encode()).hexdigest()


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of every `name==version` line."""
    found = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            found[normalise(match[1])] = match[2]
    return found


def compile_lock(upgrade: bool) -> int:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        print("lock: uv is not installed; run `make venv-dev` (it installs uv from the lock) first.", file=sys.stderr)
        return 2
    command = [uv, "pip", "compile", str(SETUP.relative_to(ROOT)), str(TOOLS.relative_to(ROOT)), "--extra", "dev"]
    command += ["--python-version", PYTHON, "--python-platform", PLATFORM, "-o", str(LOCK.relative_to(ROOT))]
    command += ["--custom-compile-command", "make lock", "--quiet"] + (["--upgrade"] if upgrade else [])
    subprocess.run(command, cwd=ROOT, check=True)
    text = LOCK.read_text()
    LOCK.write_text(f"{DIGEST_LINE}{requirements_digest()}\n{text}")
    print(f"lock: wrote {LOCK.relative_to(ROOT)} ({len(pins(text.splitlines()))} packages); now run `make test`.")
    return 0


def installed() -> dict[str, str]:
    """name -> version of everything in this environment but the project itself (`pip freeze --all`)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True
    ).stdout
    return {name: version for name, version in pins(out.splitlines()).items() if name != PROJECT}


def check(exact: bool) -> int:
    lines = LOCK.read_text().splitlines()
    recorded = next((line[len(DIGEST_LINE) :] for line in lines if line.startswith(DIGEST_LINE)), None)
    if recorded != requirements_digest():
        print(
            "lock: setup.cfg's requirements (or requirements/tools.in) changed since requirements/lock.txt was made; "
            "run `make lock`, then `make test`, and commit both.",
            file=sys.stderr,
        )
        return 1
    pip_check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if pip_check.returncode:
        print(f"lock: `pip check` failed:\n{pip_check.stdout}{pip_check.stderr}", file=sys.stderr)
        return 1
    if exact:
        locked, present = pins(lines), installed()
        differ = sorted(
            f"{name}: locked {locked.get(name, '-')}, installed {present.get(name, '-')}"
            for name in set(locked) | set(present)
            if locked.get(name) != present.get(name)
        )
        if differ:
            print("lock: this environment differs from the lock:\n  " + "\n  ".join(differ), file=sys.stderr)
            return 1
    print(f"lock: requirements/lock.txt fits setup.cfg; pip check passed{'; environment == lock' if exact else ''}.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="re-lock with uv")
    compile_parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest release")
    check_parser = commands.add_parser("check", help="the lock fits setup.cfg; pip check")
    check_parser.add_argument("--exact", action="store_true", help="also: this environment == the lock")
    args = parser.parse_args()
    return compile_lock(args.upgrade) if args.command == "compile" else check(args.exact)


if __name__ == "__main__":
    sys.exit(main())
