"""The suite's SLURM path on a real scheduler (tests/slurm_cluster.py: slurmctld and two slurmd "nodes" on this
host): a sweep submitted as an array, a fit pre-empted by its time limit that requeues itself and finishes exactly as
an uninterrupted run does, and a two-node DDP fit through the shipped sbatch template."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from data_helpers import TOY_WORLD, toy_samples, write_index, write_shard
from slurm_cluster import LocalSlurm, free_port, missing_requirement, start, stop

from lit_sllm.tools.sweep import expand, load_sweep

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "experiments" / "slurm" / "mtbi.sbatch"
# the templates ask for 8 GPUs per node; the local nodes have one CPU each and no GPUs
CPU_NODES = ["--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1"]

FIT = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.mtbi.MTBI
  init_args:
    llm: {{name_or_path: {toy}/models/llm}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {toy}/models/encoder}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 2}}}}
    optimizer: {{lr: 0.001}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 1
    batches_per_epoch: {batches_per_epoch}
    train:
      asr: {{shards: {toy}/asr/train, batching: {{batch_size: 2}}}}
{val}
trainer:
  accelerator: cpu
  strategy: {strategy}
  max_steps: {steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  num_sanity_val_steps: 0
  logger:
    - {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {logs}, name: csv}}}}
    - {{class_path: lightning.pytorch.loggers.WandbLogger, init_args: {{offline: true, save_dir: {logs}, project: t}}}}
  callbacks:
    - {{class_path: model_helpers.StepLog, init_args: {{folder: {logs}}}}}
    - {{class_path: model_helpers.KeyRecorder, init_args: {{folder: {logs}}}}}
"""


def unavailable(message: str) -> None:
    """Skips, or fails where LIT_SLLM_REQUIRE_CLUSTER=1 (CI, which installs everything) says the cluster must run."""
    if os.environ.get("LIT_SLLM_REQUIRE_CLUSTER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The local cluster, started once for these tests and stopped after them."""
    reason = missing_requirement()
    if reason:
        unavailable(f"no local SLURM cluster: {reason}")
    root = tmp_path_factory.mktemp("slurm")
    socket_dir = Path(tempfile.mkdtemp(prefix="lit-sllm-munge-"))
    socket_dir.chmod(0o755)  # munged's socket folder must be world-searchable
    try:
        cluster = start(root, socket_dir)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
        shutil.rmtree(socket_dir, ignore_errors=True)
        unavailable(f"the local SLURM cluster did not start: {err}")
    yield cluster
    stop(root)
    shutil.rmtree(socket_dir, ignore_errors=True)


def job_env(cluster: LocalSlurm, **extra: str) -> dict[str, str]:
    """What the jobs inherit (sbatch exports the submitting environment): this venv's `lit-sllm` and `aws` first on
    PATH, the tests' callbacks importable, one thread per process, W&B offline."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{cluster.env['PATH']}"
    base = {k: v for k, v in cluster.env.items() if not k.startswith(("WANDB_", "MASTER_"))}
    return base | {
        "PATH": path, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    } | extra  # fmt: skip


def assert_completed(jobs: list[dict[str, str]], where: Path) -> None:
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(where.glob("*.out")))
    assert [(j["JobState"], j["ExitCode"]) for j in jobs] == [("COMPLETED", "0:0")] * len(jobs), logs


def steps(folder: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (folder / f"steps.rank{rank}.jsonl").read_text().splitlines()]


def checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def adam_step(state: dict) -> int:
    return int(next(iter(state["optimizer_states"][0]["state"].values()))["step"])


def test_sweep_runs_as_a_slurm_array_and_every_run_leaves_its_config_and_checkpoint(slurm, tmp_path):
    for name in ("data_shards", "experiments"):  # the toy configs' relative paths; runs/ is written here
        (tmp_path / name).symlink_to(REPO / name)
    sweep_file, count, max_steps = "experiments/sweeps/toy_mtbi.yaml", 2, 3
    command = ["lit-sllm", "sweep", sweep_file, "--slurm", "--count", str(count)]
    command += ["--override", f"trainer.max_steps={max_steps}"]
    done = subprocess.run(command, cwd=tmp_path, env=job_env(slurm), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[-1]  # "Submitted batch job N"
    jobs = slurm.wait(job_id, timeout=420)
    assert len(jobs) == count
    assert_completed(jobs, tmp_path)
    runs = expand(load_sweep(REPO / sweep_file), count)
    for index, run in enumerate(runs):
        folder = tmp_path / "runs" / "toy" / f"toy_mtbi-{index}"
        config = yaml.safe_load((folder / "checkpoints" / "config.yaml").read_text())
        model = config["model"]["init_args"]
        transform = config["data"]["init_args"]["train"]["mtbi"]["transform"]["init_args"]
        assert model["optimizer"]["lr"] == pytest.approx(run["model.optimizer.lr"])
        assert model["kd_weight"] == run["model.kd_weight"]
        assert transform["interleave_prob"] == pytest.approx(run["data.train.mtbi.transform.init_args.interleave_prob"])
        assert config["trainer"]["max_steps"] == max_steps
        state = checkpoint(folder / "checkpoints" / "last.ckpt")
        assert state["global_step"] == max_steps and adam_step(state) == max_steps
        assert len(list((folder / "wandb").glob("offline-run-*"))) == 1


def submit_fit(slurm: LocalSlurm, folder: Path, steps_: int, *options: str, **env: str) -> str:
    """Submits the shipped MTBI template with a toy config writing into `folder`; returns the job id."""
    folder.mkdir()
    config = folder / "fit.yaml"
    values = dict(toy=TOY_WORLD, logs=folder, steps=steps_, batches_per_epoch=1000, val="", strategy="auto")
    config.write_text(FIT.format(**values))
    options = (*CPU_NODES, "--nodes=1", f"--output={folder}/%x-%j.out", *options)
    extra = {"CONFIGS": str(config), "RUN_DIR": str(folder / "run")} | env
    return slurm.sbatch(TEMPLATE, *options, cwd=folder, env=job_env(slurm, **extra))


def test_time_limit_signal_requeues_and_the_run_continues_exactly(slurm, tmp_path):
    total, held_at = 12, 5
    whole = submit_fit(slurm, tmp_path / "whole", total, "--time=00:10:00")
    # USR1 40 s before a 2 min limit, which SLURM sends 50 to 80 s after the start (it checks every 30 s and rather
    # early than late); the first run waits at the end of step 5 for it, or acts on it at the end of an earlier step
    requeued = submit_fit(
        slurm, tmp_path / "requeued", total, "--time=00:02:00", "--signal=USR1@40", LIT_SLLM_TEST_HOLD_AT=str(held_at)
    )
    assert_completed(slurm.wait(whole, timeout=300), tmp_path / "whole")
    (job,) = slurm.wait(requeued, timeout=360, release_requeued=True)
    assert_completed([job], tmp_path / "requeued")
    assert job["Restarts"] == "1"

    run_dir = tmp_path / "requeued" / "run"
    assert [p.name for p in run_dir.glob("hpc_ckpt_*")] == ["hpc_ckpt_1.ckpt"]  # saved once: not by a loader worker
    saved = checkpoint(run_dir / "hpc_ckpt_1.ckpt")  # written by Lightning's handler at the end of a step
    at = saved["global_step"]
    assert 1 <= at <= held_at and adam_step(saved) == at and saved["SpeechTextDataModule"]["batches"] == at
    final = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == total and adam_step(final) == total

    reference, parts = steps(tmp_path / "whole"), steps(tmp_path / "requeued")
    assert [r["step"] for r in reference] == list(range(1, total + 1))
    assert [(r["restart"], r["step"]) for r in parts] == [(int(s > at), s) for s in range(1, total + 1)]
    assert [r["keys"] for r in parts] == [r["keys"] for r in reference]  # no batch read twice, none skipped
    resumed = [r["loss"] for r in parts if r["restart"] == 1]
    assert resumed == pytest.approx([r["loss"] for r in reference[at:]], rel=1e-5, abs=1e-6)
    log = next((tmp_path / "requeued").glob("*.out")).read_text()  # one log, appended to by both runs
    assert log.count("Handling auto-requeue signal") == 1 and f"Requeue signal: saving at the end of step {at}," in log
    assert "Restored all states from the checkpoint at " + str(run_dir / "hpc_ckpt_1.ckpt") in log


def _uneven_dev_set(folder: Path) -> list[str]:
    """Toy ASR validation samples in three shards of 5, 2 and 4 (uneven over two ranks)."""
    samples, layout = iter(toy_samples("asr/val", 11)), {}
    for shard, count in enumerate((5, 2, 4)):
        layout[f"dev-{shard:06d}.tar"] = [next(samples) for _ in range(count)]
        write_shard(folder / f"dev-{shard:06d}.tar", layout[f"dev-{shard:06d}.tar"])
    write_index(folder, layout)
    return [key for samples in layout.values() for key, _, _ in samples]


def test_two_node_ddp_through_the_template_validates_once_and_logs_from_rank_zero(slurm, tmp_path):
    keys = _uneven_dev_set(tmp_path / "dev")
    folder = tmp_path / "fit"
    folder.mkdir()
    val = f"    val:\n      dev: {{shards: {tmp_path / 'dev'}, batching: {{batch_size: 2}}}}\n"
    config = folder / "fit.yaml"
    config.write_text(FIT.format(toy=TOY_WORLD, logs=folder, steps=3, batches_per_epoch=3, val=val, strategy="ddp"))
    # node names n1/n2 resolve nowhere: rendezvous on the loopback address, on a free port
    env = dict(CONFIGS=str(config), RUN_DIR=str(folder / "run"), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    options = (*CPU_NODES, "--nodes=2", "--time=00:10:00", f"--output={folder}/%x-%j.out")
    job_id = slurm.sbatch(TEMPLATE, *options, cwd=folder, env=job_env(slurm, **env))
    assert_completed(slurm.wait(job_id, timeout=360), folder)

    where = [(r["rank"], r["node"], r["world_size"]) for rank in (0, 1) for r in steps(folder, rank)[:1]]
    assert where == [(0, "n1", 2), (1, "n2", 2)]  # one process per node
    assert [r["step"] for r in steps(folder, 0)] == [r["step"] for r in steps(folder, 1)] == [1, 2, 3]
    seen = [key for rank in (0, 1) for key in json.loads((folder / f"val_keys.rank{rank}.json").read_text())]
    assert sorted(seen) == sorted(f"dev/{key}" for key in keys)  # every sample once
    (metrics,) = folder.rglob("metrics.csv")  # one CSV logger wrote: rank 0's
    with open(metrics) as handle:
        counts = [float(r["val/dev/samples"]) for r in csv.DictReader(handle) if r.get("val/dev/samples")]
    assert counts == [len(keys)]
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1  # one W&B run: rank 0's
    assert checkpoint(folder / "run" / "checkpoints" / "last.ckpt")["global_step"] == 3
