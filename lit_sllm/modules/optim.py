"""Optimizer and learning-rate schedule from config."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from lit_sllm.config_errors import ConfigError
from lit_sllm.models.freezing import COMPONENTS, component_of

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass
class GroupSpec:
    """Optimizer settings of one component (a parameter group); unset fields take the optimizer's own.

    Attributes:
        lr: peak learning rate of the component (the schedule scales every group by the same factor).
        weight_decay: weight decay of the component.
    """

    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class OptimSpec:
    """Optimizer settings (VoiceTextBlender: Adam, lr 1e-4, betas (0.9, 0.98), wd 1e-3).

    Attributes:
        name: "adam" or "adamw".
        lr: peak learning rate of every component without its own.
        betas: Adam betas.
        weight_decay: weight decay (L2 for adam, decoupled for adamw) of every component without its own.
        eps: Adam epsilon.
        fused: fused kernels; None means on when training on CUDA.
        groups: per-component settings, keyed by component ("encoder", "adapter", "lora", "llm"), e.g.
            `{encoder: {lr: 1.0e-4}}` so a pretrained encoder is fine-tuned gently beside a fresh adapter.
    """

    name: Literal["adam", "adamw"] = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    fused: bool | None = None
    groups: dict[str, GroupSpec] = field(default_factory=dict)


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
    decay: Literal["cosine", "constant"] = "cosine"


def parameter_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], spec: OptimSpec
) -> list[dict[str, Any]]:
    """One optimizer group per component that trains, named by component, with its own lr and weight decay.

    Raises:
        ConfigError: for a group key that is not a component, or a component that has no trainable parameter.
    """
    unknown = sorted(set(spec.groups) - set(COMPONENTS))
    if unknown:
        raise ConfigError(f"model.optimizer.groups.{unknown[0]} is not a component; use one of {list(COMPONENTS)}.")
    by_component: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in named_parameters:
        if param.requires_grad:
            by_component.setdefault(component_of(name), []).append(param)
    idle = sorted(set(spec.groups) - set(by_component))
    if idle:
        raise ConfigError(
            f"model.optimizer.groups.{idle[0]} is set but the {idle[0]} has no trainable parameters; set "
            f"model.trainable.{idle[0]}: true (and LoRA for lora), or remove the group."
        )
    groups = []
    for component in COMPONENTS:
        if component in by_component:
            own = spec.groups.get(component, GroupSpec())
            lr = spec.lr if own.lr is None else own.lr
            decay = spec.weight_decay if own.weight_decay is None else own.weight_decay
            groups.append({"name": component, "params": by_component[component], "lr": lr, "weight_decay": decay})
    return groups


def build_optimizer(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], spec: OptimSpec, on_cuda: bool
) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters of a `SpeechLLM`, one group per component (`parameter_groups`)."""
    if spec.name not in _OPTIMIZERS:
        raise ConfigError(f"model.optimizer.name '{spec.name}' is unknown; use one of {sorted(_OPTIMIZERS)}.")
    fused = on_cuda if spec.fused is None else spec.fused
    groups = parameter_groups(named_parameters, spec)
    return _OPTIMIZERS[spec.name](
        groups, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay, eps=spec.eps, fused=fused
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
