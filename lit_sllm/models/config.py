"""Components that remember how they were built, so a checkpoint or export can build them again."""

from __future__ import annotations

from typing import Any

from torch import nn

# Widths the model supplies when it builds an adapter; they are not part of its config.
SUPPLIED_ARGS = ("self", "__class__", "input_dim", "output_dim")


def init_args_of(local_vars: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments in `locals()` at the top of an `__init__`, minus what the model supplies."""
    return {k: v for k, v in local_vars.items() if k not in SUPPLIED_ARGS}


def component_config(module: nn.Module) -> dict[str, Any]:
    """`{"class_path", "init_args"}` of a component, as a YAML would name it."""
    init_args = getattr(module, "init_args", None)
    if init_args is None:
        raise TypeError(
            f"{type(module).__qualname__} does not record its constructor arguments; set "
            "`self.init_args = init_args_of(locals())` first thing in its __init__ so checkpoints can rebuild it."
        )
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}
