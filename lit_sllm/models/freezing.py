"""The one place that decides what trains, and the table that shows it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

COMPONENTS = ("encoder", "adapter", "llm", "lora")


@dataclass
class Trainable:
    """Which components train; the rest are frozen (no gradients, kept in eval mode).

    Attributes:
        encoder: the speech encoder (VoiceTextBlender: trained; MTBI: frozen).
        adapter: the modality adapter (trained in both recipes).
        llm: the LLM's own weights (full fine-tuning; both recipes keep them frozen).
        lora: the LoRA weights, when LoRA is configured.
    """

    encoder: bool = False
    adapter: bool = True
    llm: bool = False
    lora: bool = True


def component_of(name: str) -> str:
    """Component a parameter name of `SpeechLLM` belongs to."""
    head = name.split(".", 1)[0]
    if head == "llm":
        return "lora" if "lora_" in name else "llm"
    return head


def apply_trainable(model: nn.Module, trainable: Trainable) -> None:
    """Sets `requires_grad` on every parameter of `model` (a SpeechLLM) from `trainable`."""
    for name, param in model.named_parameters():
        param.requires_grad_(getattr(trainable, component_of(name)))


def parameter_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Component -> (trainable, total) parameter counts; works on the meta device."""
    counts = {component: [0, 0] for component in COMPONENTS}
    for name, param in model.named_parameters():
        entry = counts[component_of(name)]
        entry[1] += param.numel()
        if param.requires_grad:
            entry[0] += param.numel()
    return {component: (trainable, total) for component, (trainable, total) in counts.items() if total}


def format_parameter_table(counts: dict[str, tuple[int, int]]) -> str:
    """A fixed-width table of trainable vs total parameters per component, with a total row."""
    lines = [f"{'component':<10} {'trainable':>14} {'total':>16}"]
    for component, (trainable, total) in counts.items():
        lines.append(f"{component:<10} {trainable:>14,} {total:>16,}")
    trainable = sum(t for t, _ in counts.values())
    total = sum(n for _, n in counts.values())
    lines.append(f"{'all':<10} {trainable:>14,} {total:>16,}")
    return "\n".join(lines)
