"""SLURM requeue at a step boundary: the requeue signal (`#SBATCH --signal=SIGUSR1@120`) is acted on at the end of
the training step in which it arrives, by the training process only.

Lightning's `SLURMEnvironment(auto_requeue=True)` saves `hpc_ckpt_<n>.ckpt` and runs `scontrol requeue` inside the
signal handler. Two things go wrong with that, both seen on a real SLURM (tests/test_slurm.py):

- The handler runs wherever the main thread is, usually between fetching a batch and finishing its optimizer step.
  That checkpoint counts the batch as read but its step as not done, so the requeued run skips a batch (and a signal
  during the optimizer step saves half-updated weights).
- DataLoader workers are forked after Lightning installs the handler, and SLURM signals every process of the job step,
  so each worker runs it too: it saves its stale copy of the trainer (the step at which it was forked) as a newer
  `hpc_ckpt_<n>.ckpt` and calls `scontrol requeue` itself.

This callback installs its own handler before Lightning would (Lightning then leaves the signal alone): it only notes
the signal, so a worker that inherits it does nothing. At the end of the step the training process runs Lightning's
handler, in the state `ModelCheckpoint` saves, where weights, optimizer, step count and data position agree; ranks
agree on the step through a one-flag all-reduce per step. It then waits for the SIGTERM with which SLURM ends the
requeued job, so that no step runs past the saved one.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_info


class RequeueAtStepEnd(L.Callback):
    """Holds Lightning's SLURM auto-requeue until the end of the training step; does nothing outside SLURM.

    Args:
        sigterm_wait_s: how long to wait after the requeue for SLURM's SIGTERM before training goes on (the
            checkpoint is written either way).
    """

    def __init__(self, sigterm_wait_s: float = 60.0) -> None:
        self.sigterm_wait_s = sigterm_wait_s
        self._signum: int | None = None
        self._previous: Any = None
        self._pending = False

    @property
    def pending(self) -> bool:
        """Whether a requeue signal arrived and waits for the end of the current step."""
        return self._pending

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # runs before Lightning registers its handlers, and before any DataLoader worker is forked
        environment = trainer._accelerator_connector.cluster_environment  # where Lightning's signal connector looks
        slurm = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        if stage != "fit" or not slurm or threading.current_thread() is not threading.main_thread():
            return
        self._signum = environment.requeue_signal or signal.SIGUSR1
        self._previous = signal.signal(self._signum, self._hold)

    def _hold(self, signum: int, frame: Any) -> None:
        self._pending = True

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._signum is None or not trainer.strategy.reduce_boolean_decision(self._pending, all=False):
            return
        self._pending = False
        if 0 < trainer.max_steps <= trainer.global_step:
            rank_zero_info("Requeue signal in the last step: the fit ends now, no requeue needed")
            return
        rank_zero_info(f"Requeue signal: saving at the end of step {trainer.global_step}, then requeueing")
        # Lightning's own handler: finalizes the loggers, saves hpc_ckpt_<n>.ckpt, rank 0 runs `scontrol requeue`
        trainer._signal_connector._slurm_sigusr_handler_fn(self._signum, None)
        deadline = time.monotonic() + self.sigterm_wait_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)  # SLURM's SIGTERM makes Lightning end the fit after this step, with nothing trained past it

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._signum is not None:
            signal.signal(self._signum, signal.SIG_DFL if self._previous is None else self._previous)
            self._signum = None
