"""Shards read from servers on 127.0.0.1 (tests/shard_servers.py): moto's S3 through the README's
`pipe:aws s3 cp s3://... -` URLs, and plain HTTP. `data inspect` reports what it reports for the local copy, a fit
streams from both, and a server stopped in the middle of a shard ends in a clean re-read or a counted skip, in bounded
time."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from data_helpers import TOY_WORLD
from shard_servers import FAKE_SECRET, Server, aws_env, http_server, moto_server

from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.pipeline import DataTally, RetryPolicy, read_index, read_shard

pytestmark = pytest.mark.cluster
SETS = ("asr/train", "asr/val", "asr/test")
FAST_RETRY = RetryPolicy(attempts=3, wait_s=0.2, timeout_s=5.0)


def started(server: Server) -> Server:
    try:
        return server.start()
    except (OSError, RuntimeError) as err:
        if os.environ.get("LIT_SLLM_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"shard server did not start: {err}")
        pytest.skip(f"shard server did not start: {err}")


def shard_names(set_name: str) -> list[str]:
    return [Path(shard.url).name for shard in read_index(TOY_WORLD / set_name / "index.json")]


def s3_urls(set_name: str) -> list[str]:
    return [f"pipe:aws s3 cp s3://toy/{set_name}/{name} -" for name in shard_names(set_name)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory, monkeypatch_module):
    """moto on 127.0.0.1 holding the toy sets in bucket `toy`; `aws` (from this venv) set up to reach it."""
    folder = tmp_path_factory.mktemp("s3")
    server = started(moto_server(folder))
    env = aws_env(folder, server.url)
    for name, value in env.items():
        monkeypatch_module.setenv(name, value)
    monkeypatch_module.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    aws = ["aws", "s3"]
    subprocess.run([*aws, "mb", "s3://toy"], check=True, capture_output=True, timeout=60)
    for set_name in SETS:
        source, target = str(TOY_WORLD / set_name), f"s3://toy/{set_name}/"
        subprocess.run([*aws, "cp", "--quiet", "--recursive", source, target], check=True, timeout=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def web():
    """`python -m http.server` over the toy world."""
    server = started(http_server(TOY_WORLD))
    yield server
    server.stop()


@pytest.mark.parametrize("set_name", ["asr/val", "asr/test"])
def test_inspect_over_s3_and_http_reports_what_the_local_copy_holds(s3, web, set_name):
    local = inspect_shards(str(TOY_WORLD / set_name))
    assert local["samples"] == sum(s.samples for s in read_index(TOY_WORLD / set_name / "index.json"))
    assert inspect_shards(s3_urls(set_name)) == local
    assert inspect_shards(f"{web.url}/{set_name}/index.json") == local
    cli = [sys.executable, "-m", "lit_sllm.cli", "data", "inspect", "--json", *s3_urls(set_name)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout) == local and FAKE_SECRET not in done.stdout + done.stderr


FIT = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.mtbi.MTBI
  init_args:
    llm: {{name_or_path: {toy}/models/llm}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {toy}/models/encoder}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 2}}}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 1
    batches_per_epoch: 4
    train:
      asr: {{shards: {train}, batching: {{batch_size: 4}}}}
    val:
      asr_s3: {{shards: {val_s3}, batching: {{batch_size: 16}}}}
      asr_http: {{shards: {val_http}, batching: {{batch_size: 16}}}}
trainer:
  accelerator: cpu
  max_steps: 4
  log_every_n_steps: 1
  enable_progress_bar: false
  num_sanity_val_steps: 0
  default_root_dir: {root}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: csv}}}}
"""


@pytest.mark.slow
def test_fit_trains_from_s3_and_validates_from_s3_and_http(s3, web, tmp_path):
    root = tmp_path / "out"
    config = tmp_path / "fit.yaml"
    values = dict(
        toy=TOY_WORLD, root=root, train=json.dumps(s3_urls("asr/train")), val_s3=json.dumps(s3_urls("asr/val")),
        val_http=f"{web.url}/asr/val/index.json",
    )  # fmt: skip
    config.write_text(FIT.format(**values))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_sllm.cli", "fit", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = root.rglob("metrics.csv")
    with open(metrics) as handle:
        rows = list(csv.DictReader(handle))
    expected = sum(s.samples for s in read_index(TOY_WORLD / "asr" / "val" / "index.json"))
    for name in ("asr_s3", "asr_http"):
        assert [float(r[f"val/{name}/samples"]) for r in rows if r.get(f"val/{name}/samples")] == [expected]
    assert max(int(r["step"]) for r in rows if r.get("train/loss")) == 3  # steps 0..3 trained
    written = [p.read_text(errors="ignore") for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".csv")]
    assert all(FAKE_SECRET not in text for text in [done.stdout, done.stderr, *written])


# --- a server that goes away mid-shard --------------------------------------------------------------------------


def big_shard(folder: Path, samples: int = 40, size: int = 256 * 1024) -> tuple[Path, list[str]]:
    """A shard of `samples` keys with a json and a `size`-byte member each (read raw: nothing is decoded)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, keys = folder / "big-000000.tar", [f"k{i:04d}" for i in range(samples)]
    with tarfile.open(path, "w") as tar:
        for key in keys:
            for ext, data in (("json", b"{}"), ("bin", os.urandom(size))):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path, keys


def read_some(stream, count: int) -> list[str]:
    return [next(stream)["__key__"] for _ in range(count)]


@pytest.mark.parametrize("comes_back", [True, False], ids=["back", "gone"])
def test_http_server_stopped_mid_shard(tmp_path, comes_back):
    path, keys = big_shard(tmp_path / "shards")
    server = started(http_server(path.parent, pause_after=path.stat().st_size // 3))
    tally = DataTally()
    stream = read_shard(f"{server.url}/{path.name}", tally, FAST_RETRY)
    seen = read_some(stream, 3)
    server.stop()  # mid-shard: it has sent a third of the file
    if comes_back:
        server = started(http_server(path.parent, port=server.port))  # back, serving whole files
    start = time.monotonic()
    try:
        seen += [raw["__key__"] for raw in stream]
    finally:
        server.stop()
    assert time.monotonic() - start < 20
    if comes_back:
        assert seen == keys and tally.retries == 1 and not tally.total  # every sample once, in order
    else:  # what came before the drop, nothing twice, then one counted skip
        assert seen == keys[: len(seen)] and 3 <= len(seen) < len(keys)
        assert dict(tally.total) == {"unreadable_shard": 1} and tally.retries == FAST_RETRY.attempts - 1


# one ranged GET of 1 MB at a time, slowed to 2 MB/s, so the shard is mid-read when the server stops; one attempt
# per request, so that a server that is gone fails fast and the re-reads are ours
THROTTLED_S3 = """s3 =
  max_concurrent_requests = 1
  multipart_threshold = 1MB
  multipart_chunksize = 1MB
  max_bandwidth = 2MB/s
max_attempts = 1
"""


@pytest.mark.parametrize("comes_back", [True, False], ids=["back", "gone"])
def test_s3_server_stopped_mid_shard(tmp_path, monkeypatch, comes_back):
    path, keys = big_shard(tmp_path / "shards", samples=16)
    server = started(moto_server(tmp_path))
    env = aws_env(tmp_path, server.url, THROTTLED_S3)
    for name, value in (env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}).items():
        monkeypatch.setenv(name, value)

    def upload() -> None:
        subprocess.run(["aws", "s3", "mb", "s3://drop"], check=True, capture_output=True, timeout=60)
        subprocess.run(["aws", "s3", "cp", "--quiet", str(path), "s3://drop/"], check=True, timeout=60)

    upload()
    tally = DataTally()
    stream = read_shard(f"pipe:aws s3 cp s3://drop/{path.name} -", tally, FAST_RETRY)
    seen = read_some(stream, 3)
    server.stop()
    if comes_back:
        started(server)
        upload()  # moto keeps objects in memory: the restarted server gets the shard again
    start = time.monotonic()
    try:
        seen += [raw["__key__"] for raw in stream]
    finally:
        server.stop()
    assert time.monotonic() - start < 60
    if comes_back:  # aws's next ranged GET or our re-read reached the restarted server: nothing lost or repeated
        assert seen == keys and not tally.total
    else:
        assert seen == keys[: len(seen)] and 3 <= len(seen) < len(keys)
        assert sum(tally.total.values()) == 1 and tally.retries == FAST_RETRY.attempts - 1
