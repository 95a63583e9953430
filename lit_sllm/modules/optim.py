"""Optimizer and learning-rate schedule from config."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from lit_sllm.config_errors import ConfigError

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass
class OptimSpec:
    """Optimizer settings (VoiceTextBlender: Adam, lr 1e-4, betas (0.9, 0.98), wd 1e-3).

    Attributes:
        name: "adam" or "adamw".
        lr: peak learning rate.
        betas: Adam betas.
        weight_decay: weight decay (L2 for adam, decoupled for adamw).
        eps: Adam epsilon.
        fused: fused kernels; None means on when training on CUDA.
    """

    name: str = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    fused: bool | None = None


@dataclass
class ScheduleSpec:
    """Linear warmup, then cosine decay to `min_lr` (or constant).

    Attributes:
        warmup_steps: optimizer steps of linear warmup from 0.
        total_steps: steps to decay over; None uses the trainer's estimate (max_steps or epochs x batches).
        min_lr: floor of the cosine decay (VoiceTextBlender: 1e-6).
        decay: "cosine" or "constant" after warmup.
    """

    warmup_steps: int = 0
    total_steps: int | None = None
    min_lr: float = 0.0
    decay: str = "cosine"


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimSpec, on_cuda: bool) -> torch.optim.Optimizer:
    if spec.name not in _OPTIMIZERS:
        raise ConfigError(f"model.optimizer.name '{spec.name}' is unknown; use one of {sorted(_OPTIMIZERS)}.")
    fused = on_cuda if spec.fused is None else spec.fused
    return _OPTIMIZERS[spec.name](
        params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay, eps=spec.eps, fused=fused
    )


def lr_multiplier(step: int, spec: ScheduleSpec, peak_lr: float, total_steps: int) -> float:
    """Learning rate at `step` as a fraction of the peak."""
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    floor = spec.min_lr / peak_lr
    if spec.decay == "constant":
        return 1.0
    progress = min(1.0, (step - spec.warmup_steps) / max(1, total_steps - spec.warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec, peak_lr: float, total_steps: int) -> LambdaLR:
    if spec.decay not in ("cosine", "constant"):
        raise ConfigError(f"model.schedule.decay '{spec.decay}' is unknown; use 'cosine' or 'constant'.")
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, spec, peak_lr, total_steps))
