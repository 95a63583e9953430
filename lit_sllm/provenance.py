"""Which code ran: the git commit and whether the working tree differed from it, saved with runs and results."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_state(cwd: Path | None = None) -> dict[str, str | bool]:
    """Commit and dirtiness of the code that ran, for the run's saved config."""
    root = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": False}
