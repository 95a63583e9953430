"""Reading JSONL inputs line by line: bad lines go to a `SkipLog`, sample keys come from file name and line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from lit_sllm.data.shards import SkipLog


def line_key(path: Path, lineno: int) -> str:
    """A sample key made from a file name and a line number, e.g. "train_v2-00000042"."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', path.stem)}-{lineno:08d}"


def read_jsonl(path: str | Path, skips: SkipLog) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; lines that are not a JSON object go to `skips`.

    Raises:
        FileNotFoundError: at once, when `path` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass an existing JSONL file.")
    return _jsonl_records(path, skips)


def _jsonl_records(path: Path, skips: SkipLog) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                skips.add("bad_json", f"{path}:{lineno}", f"not valid JSON ({err})")
                continue
            if isinstance(record, dict):
                yield lineno, record
            else:
                skips.add("bad_json", f"{path}:{lineno}", f"expected a JSON object, got {type(record).__name__}")
