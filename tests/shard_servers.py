"""Shard servers on 127.0.0.1 for the remote-shard tests, each a subprocess that a test can stop mid-read:

- `python -m http.server` over a folder;
- this file run as a script: the same, but every response stops after `pause_after` bytes and waits there (until the
  process is stopped), so that a read is known to be mid-shard when the server goes away;
- moto's S3 server (`moto_server`), with fake credentials; `aws` reaches it through `AWS_ENDPOINT_URL`.

Requests are only ever made to 127.0.0.1; the AWS variables point the CLI away from any config, credentials or
instance metadata of the machine.
"""

from __future__ import annotations

import http.server
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FAKE_KEY_ID = "lit-sllm-test-key-id"
FAKE_SECRET = "lit-sllm-fake-secret-never-logged"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@dataclass
class Server:
    """A server subprocess on a fixed port: `stop` ends it (SIGTERM, then SIGKILL), `start` brings it back."""

    command: list[str]
    port: int
    cwd: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited with {self.process.returncode} at start")
            if _answers(self.url + "/"):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{' '.join(self.command)} did not answer on port {self.port} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def http_server(folder: Path, port: int | None = None, pause_after: int | None = None) -> Server:
    """`python -m http.server` over `folder` (or this file's pausing variant when `pause_after` is given)."""
    port = port or free_port()
    if pause_after is None:
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    else:
        command = [sys.executable, __file__, str(folder), str(port), str(pause_after)]
    return Server(command, port, folder)


def aws_env(folder: Path, endpoint: str, s3_config: str = "") -> dict[str, str]:
    """Variables that point `aws` at the local S3 server with fake credentials and nothing of this machine's."""
    config = folder / "aws-config"
    config.write_text(f"[default]\nregion = us-east-1\n{s3_config}")
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-credentials"), "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip


def moto_server(folder: Path, port: int | None = None) -> Server:
    """moto's S3-compatible server (state in memory: a restarted server is empty)."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    port = port or free_port()
    return Server([executable, "-H", "127.0.0.1", "-p", str(port)], port, folder)


class _PausingHandler(http.server.SimpleHTTPRequestHandler):
    pause_after = 0

    def copyfile(self, source, outputfile) -> None:
        outputfile.write(source.read(self.pause_after))
        outputfile.flush()
        while True:  # mid-shard until the process is stopped
            time.sleep(1)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    root, port, pause_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _PausingHandler.pause_after = pause_after

    def handler(*args, **kwargs):
        return _PausingHandler(*args, directory=root, **kwargs)

    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
