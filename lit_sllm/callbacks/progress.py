"""Progress bars in optimizer steps against `max_steps`.

The suite's training streams are endless and an "epoch" is an arbitrary cut of `batches_per_epoch` batches, so
Lightning's bars (batches of the current epoch, epochs against `max_epochs`, which is -1: "Epoch 4/-2") say nothing
about how far a run is. These show global steps of `max_steps`; where no step budget is set they behave as
Lightning's. `lit-sllm fit` swaps Lightning's default bar (TQDM or Rich) for the matching one here.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

DESCRIPTION = "step"


def step_budget(trainer: L.Trainer) -> int:
    """`max_steps` when the run has one, else 0."""
    return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else 0


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, with the training bar counting optimizer steps up to `trainer.max_steps`."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        budget = step_budget(trainer)
        if not budget:
            return super().on_train_epoch_start(trainer, *args)
        if self._leave or self.train_progress_bar is None:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        if bar.total != budget:
            bar.reset(total=budget)
        bar.n = trainer.global_step
        bar.set_description(DESCRIPTION)
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        budget = step_budget(trainer)
        if not budget:
            return super().on_train_batch_end(trainer, pl_module, *args)
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, budget):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not step_budget(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class RichStepProgressBar(RichProgressBar):
    """Lightning's Rich bar, with the training bar counting optimizer steps up to `trainer.max_steps`."""

    def _initialize_train_progress_bar_id(self) -> None:
        budget = step_budget(self.trainer)
        if not budget:
            return super()._initialize_train_progress_bar_id()
        self.train_progress_bar_id = self._add_task(budget, DESCRIPTION)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not step_budget(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if not self.is_disabled and self.progress is not None and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not step_budget(trainer):
            return super().on_train_batch_end(trainer, pl_module, *args)
        if not self.is_disabled and self.train_progress_bar_id is None:  # e.g. after a validation run
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


def step_bar_for(bar: ProgressBar | None) -> ProgressBar | None:
    """The step-counting replacement of Lightning's own default bar; None for any other (or no) bar."""
    if type(bar) is TQDMProgressBar:
        return StepProgressBar(refresh_rate=bar.refresh_rate, leave=bar._leave)
    if type(bar) is RichProgressBar:
        return RichStepProgressBar(bar.refresh_rate, bar._leave, bar.theme, bar._console_kwargs)
    return None
