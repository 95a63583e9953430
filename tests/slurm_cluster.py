"""A real SLURM cluster on this host for the tests: `munged`, `slurmctld` and two `slurmd` ("nodes" n1 and n2, one
CPU each, both on 127.0.0.1) started from a temp dir on free ports, and stopped by the pids in their pid files.

Debian's slurm-wlm 22.05 and munge, run as root (`.ci/run` installs them). Facts this relies on are in
shared/notes/slurm-local.md: no accounting (job states come from `scontrol show job`), `--signal=USR1@N` reaches the
job step's tasks, and a requeued job is held 120 s (`BeginTime`) unless released.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "sinfo", "scancel")
NODES = ("n1", "n2")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

SLURM_CONF = """\
ClusterName=litsllm
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
{nodes}
PartitionName=local Nodes={node_list} Default=YES MaxTime=INFINITE State=UP
"""


def missing_requirement() -> str | None:
    """Why a local cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "the local SLURM cluster runs slurmd as root (CI runs as root)"
    absent = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge; .ci/run does it as root)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalSlurm:
    """A running cluster: `env` points the client commands (and the jobs' environment) at it."""

    root: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 30, cwd: Path | None = None, env: dict | None = None) -> str:
        """A client command's stdout; raises with its stderr when it fails."""
        done = subprocess.run(
            command, env=env or self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, script: Path, *options: str, cwd: Path, env: dict[str, str]) -> str:
        """Submits `script` (options override its #SBATCH lines); returns the job id."""
        return self.run("sbatch", "--parsable", *options, str(script), cwd=cwd, env=env).strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` fields of a job (every task of an array job), [] once it is forgotten."""
        try:
            out = self.run("scontrol", "show", "job", "-o", job_id)
        except RuntimeError:
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout: float, release_requeued: bool = False) -> list[dict[str, str]]:
        """Waits until every task of the job is in a final state. `release_requeued` starts a requeued job at once
        instead of after SLURM's 120 s hold, with a 10 min limit so that its remaining steps end in that run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs(job_id)
            if jobs and all(job["JobState"] in FINAL_STATES for job in jobs):
                return jobs
            for job in jobs:
                if release_requeued and job["JobState"] == "PENDING" and job.get("Reason") == "BeginTime":
                    self.run("scontrol", "update", f"JobId={job['JobId']}", "StartTime=now", "TimeLimit=10")
            time.sleep(0.5)
        self.run("scancel", job_id)
        raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s: {self.jobs(job_id)}")


def _start_munged(root: Path, socket_dir: Path) -> Path:
    """munged with its own key; its socket's folder and every folder above it must be world-searchable."""
    keys = root / "munge"
    keys.mkdir(mode=0o700)
    (keys / "munge.key").write_bytes(os.urandom(1024))
    (keys / "munge.key").chmod(0o400)
    socket_path = socket_dir / "munge.socket"
    command = ["munged", f"--key-file={keys / 'munge.key'}", f"--socket={socket_path}"]
    command += [f"--pid-file={root / 'run' / 'munged.pid'}", f"--log-file={keys / 'munged.log'}"]
    command += [f"--seed-file={keys / 'munged.seed'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode:
        raise RuntimeError(f"munged did not start: {done.stderr.strip()}")
    return socket_path


def _write_conf(root: Path, munge_socket: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    nodes = "\n".join(
        f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} CPUs=1 State=UNKNOWN"
        for name in NODES
    )
    text = SLURM_CONF.format(
        host=host, ctld_port=free_port(), munge_socket=munge_socket, root=root, nodes=nodes, node_list=",".join(NODES)
    )
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def start(root: Path, socket_dir: Path, timeout: float = 60) -> LocalSlurm:
    """Starts munged, slurmctld and one slurmd per node; returns once every node is idle. On failure everything
    started is stopped again."""
    for folder in ("state", "spool", "run", "log"):
        (root / folder).mkdir(parents=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cluster = LocalSlurm(root, base | {"SLURM_CONF": str(root / "slurm.conf")})
    states: list[str] = []
    try:
        _write_conf(root, _start_munged(root, socket_dir))
        cluster.run("slurmctld", "-f", str(root / "slurm.conf"))
        for node in NODES:
            cluster.run("slurmd", "-f", str(root / "slurm.conf"), "-N", node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = cluster.run("sinfo", "-h", "-N", "-o", "%N %T").split()
            if states[1::2] == ["idle"] * len(NODES):
                return cluster
            time.sleep(0.5)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        stop(root)
        raise
    stop(root)
    raise RuntimeError(f"the local SLURM nodes did not come up in {timeout} s: {states}; logs in {root / 'log'}")


def stop(root: Path) -> None:
    """Cancels what is left, then stops the daemons by the pids in their pid files (SIGTERM, then SIGKILL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"SLURM_CONF": str(root / "slurm.conf")}
    if (root / "slurm.conf").exists() and (root / "run" / "slurmctld.pid").exists():
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30, check=False)
    pid_files = [root / "run" / f"slurmd.{node}.pid" for node in NODES]
    pid_files += [root / "run" / "slurmctld.pid", root / "run" / "munged.pid"]
    for pid_file in pid_files:
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text().split()[0])
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if not _alive(pid):
                break


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")
