"""`lit-sllm data tune-batches`: the largest batch each bucket of a train source fits in memory, found by probing
training steps of the experiment's own model on the device, written into the config (NeMo's OOMptimizer, here).

For every bucket, a batch of its worst case (its longest clip and most text tokens, the upper edges of the bucket, or
the longest seen in a metadata scan for the open-ended ones) runs forward, backward and an AdamW step; the rows double
until the step no longer fits and are then bisected. A step fits when it does not run out of memory and its peak stays
under the memory cap less the safety margin: on CUDA the peak of allocated memory against the device's total, on the
CPU the weights and optimizer states plus the rise of the process's resident high-water mark during the step
(`/proc/self`), against `--memory-cap` (default: the memory available at start), so the probe is testable without a
GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_sllm.config_errors import ConfigError

log = logging.getLogger(__name__)
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """'3GiB', '512M', '2e9' -> bytes (K/M/G/T with or without 'iB' are powers of 1024)."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = UNITS.get(value[-1:], 1)
    try:
        return int(float(value[:-1] if value[-1:] in UNITS else value) * scale)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 4GiB, 512M)") from err


class MemoryMeter:
    """The peak memory of one training step: on CUDA the allocator's peak; on the CPU the tensors that live between
    steps (`resident`: weights, buffers, optimizer states, counted exactly) plus how far the process's resident
    high-water mark rose above its resident size at the step's start (activations, gradients, temporaries).
    Counting the CPU's resident part from tensors keeps the figure free of what else the process holds or frees."""

    def __init__(self, device: str) -> None:
        import torch

        self.device, self.torch = device, torch
        self.resident, self.start = 0, 0

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise OSError(f"/proc/self/status has no {field}; the CPU probe needs Linux.")

    def reset(self, full: bool = False) -> None:
        """Frees what can be freed and restarts the peak; `full` also collects old reference cycles (slow with a
        large heap: after a failed step, whose traceback held the batch)."""
        gc.collect(2 if full else 0)
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
            return
        with contextlib.suppress(OSError):  # not glibc: no trim, the peaks only start higher
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the next peak starts low
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current resident size
        self.start = self._status("VmRSS")

    def peak(self) -> int:
        if self.device == "cuda":
            return int(self.torch.cuda.max_memory_allocated())
        return self.resident + max(0, self._status("VmHWM") - self.start)

    def capacity(self) -> int:
        if self.device == "cuda":
            return int(self.torch.cuda.mem_get_info()[1])
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise OSError("/proc/meminfo has no MemAvailable; pass --memory-cap.")


@dataclass
class Cell:
    """One bucket: its place in the grid, its worst-case item, and what the probe found."""

    row: int
    column: int
    seconds: float
    tokens: int
    limit: int
    rows: int = 0
    peak: int = 0


def worst_cases(grid: Any, measures: list[tuple[float, int]], longest: float | None, limit_rows: Any) -> list[Cell]:
    """Each bucket's worst case: its upper duration and token edges, or for the open-ended ones the longest clip and
    the most tokens seen in the scan (a clip may be longer, up to `longest`, the read limit: the margin must cover
    it); `limit_rows(seconds, tokens)` is what the batching limits allow."""
    seen = max((s for s, _ in measures), default=longest or 1.0)
    top_seconds = min(seen, longest) if longest else seen
    top_tokens = max((t for _, t in measures), default=1)
    cells = []
    for row, column in grid.cells():
        seconds = grid.durations[row] if row < len(grid.durations) else top_seconds
        edges = grid.tokens[row] if grid.tokens is not None else []
        tokens = edges[column] - 1 if column < len(edges) else max(top_tokens, edges[-1] if edges else 1)
        cells.append(Cell(row, column, seconds, tokens, limit_rows(seconds, tokens)))
    return cells


def probe_batch(rows: int, seconds: float, tokens: int, model: Any, pad_id: int) -> Any:
    """`rows` copies of one sample of `seconds` of noise and `tokens` text tokens, its second half labelled."""
    import torch

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.batch import IGNORE_INDEX
    from lit_sllm.data.collate import EncodedSample, collate

    ids = [model.audio_token_id] + [min(5, len(model.tokenizer) - 1)] * max(1, tokens - 1)
    labels = [IGNORE_INDEX] * (len(ids) // 2) + ids[len(ids) // 2 :]
    clip = 0.1 * torch.randn(max(1, round(seconds * model.sample_rate)))  # (S,)
    sample = EncodedSample("probe", "probe", ids, labels, [clip], "", seconds)
    return collate([sample] * rows, "probe", pad_id)


class StepProbe:
    """Runs one training step of `module` on a probe batch and says whether it fit the budget."""

    def __init__(self, module: Any, device: str, budget: int, autocast: Any, meter: MemoryMeter) -> None:
        import torch

        self.module, self.device, self.budget, self.autocast, self.meter = module, device, budget, autocast, meter
        self.torch = torch
        self.peaks: dict[tuple[int, int, int], int] = {}  # (duration bucket, token bucket, rows) -> peak bytes
        self.failed = False
        params = [p for p in module.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-8)  # two moments per trainable parameter, as Adam keeps
        self.pad_id = next(i for i in (module.model.tokenizer.pad_token_id, 0) if i is not None)

    def warm_up(self, cell: Cell) -> None:
        """One step of one row, so that the optimizer's states exist, then counts what lives between steps."""
        self(cell, 1)
        tensors = [*self.module.parameters(), *self.module.buffers()]
        tensors += [v for state in self.optimizer.state.values() for v in state.values()]
        self.meter.resident = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, self.torch.Tensor))
        self.peaks.clear()

    def __call__(self, cell: Cell, rows: int) -> bool:
        torch = self.torch
        self.meter.reset(full=self.failed)
        self.failed = False
        try:
            batch = probe_batch(rows, cell.seconds, cell.tokens, self.module.model, self.pad_id).to(self.device)
            with torch.autocast(self.device, dtype=self.autocast, enabled=self.autocast is not None):
                inputs = self.module.model.prepare_inputs(batch)
                loss = self.module.compute_loss(
                    batch, inputs, self.module.model.hidden_states(inputs.inputs_embeds, inputs.attention_mask)
                )["loss"]
            loss.backward()
            self.optimizer.step()
            loss.item()
            peak = self.meter.peak()
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not isinstance(err, torch.cuda.OutOfMemoryError | MemoryError) and "memory" not in str(err).lower():
                raise
            self.failed = True
            return False
        finally:
            batch = inputs = loss = None
            self.optimizer.zero_grad(set_to_none=True)
        self.peaks[(cell.row, cell.column, rows)] = peak
        return peak <= self.budget


def largest_rows(fits: Any, cell: Cell, upper: int) -> int:
    """The most rows in [1, upper] for which `fits(cell, rows)` holds (doubling, then bisection); 0 if 1 fails."""
    if not fits(cell, 1):
        return 0
    low, high = 1, None
    while high is None and low < upper:
        candidate = min(upper, low * 2)
        low, high = (candidate, None) if fits(cell, candidate) else (low, candidate)
    while high is not None and high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(cell, middle) else (low, middle)
    return low


def tune(cells: list[Cell], fits: StepProbe, max_rows: int) -> None:
    """Probes every cell in order, each bounded by the cells before it that are no larger in either dimension."""
    for index, cell in enumerate(cells):
        smaller = [c.rows for c in cells[:index] if c.seconds <= cell.seconds and c.tokens <= cell.tokens]
        upper = min([cell.limit, max_rows, *smaller]) if smaller else min(cell.limit, max_rows)
        cell.rows = largest_rows(fits, cell, max(1, upper))
        cell.peak = fits.peaks.get((cell.row, cell.column, cell.rows), 0)
        if cell.rows == 0:
            raise RuntimeError(
                f"One sample of {cell.seconds:.1f} s and {cell.tokens} tokens does not fit the memory budget; lower "
                "data.max_duration (or the source's batching.max_duration), raise --memory-cap or use a smaller model."
            )
        fill = f"peak {cell.peak / 2**20:.0f} MiB"
        log.info("bucket %d/%d (%.1f s, %d tokens): %d rows, %s", cell.row, cell.column, cell.seconds, cell.tokens,
                 cell.rows, fill)  # fmt: skip


def batch_sizes(cells: list[Cell], grid: Any) -> list[list[int]]:
    """The probed rows as `bucket_batch_sizes`: one row per duration bucket."""
    out: list[list[int]] = [[] for _ in range(len(grid.durations) + 1)]
    for cell in cells:
        out[cell.row].append(cell.rows)
    return out


def capacity_rows(spec: Any) -> Any:
    """(seconds, tokens) -> the rows the spec's own limits allow for a batch of such items."""
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.batching import MAX_ROWS

    def rows(seconds: float, tokens: int) -> int:
        limits = [spec.batch_size or MAX_ROWS]
        if spec.max_duration is not None:
            limits.append(math.floor((spec.max_duration + 1e-9) / seconds))
        if spec.max_tokens is not None:
            limits.append(spec.max_tokens // max(1, tokens))
        return max(1, min(limits))

    return rows


def build(config: dict[str, Any], device: str) -> tuple[Any, Any]:
    """(data module, recipe module on `device`) from a resolved experiment config, the data's tokenizer linked from
    the model's LLM as `lit-sllm fit` links it."""
    from jsonargparse import ArgumentParser

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.datamodule import SpeechTextDataModule
    from lit_sllm.modules.base import SpeechLLMModule

    model, data = dict(config["model"]), dict(config["data"])
    llm = model.get("init_args", {}).get("llm", {})
    data_args = dict(data.get("init_args", {}))
    data_args["tokenizer"] = llm.get("tokenizer") or llm["name_or_path"]
    data_args.setdefault("audio_token", model.get("init_args", {}).get("audio_token", "<|audio|>"))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SpeechTextDataModule, "data", required=True)
    parser.add_subclass_arguments(SpeechLLMModule, "model", required=True)
    parsed = parser.parse_object({"data": {**data, "init_args": data_args}, "model": model})
    built = parser.instantiate_classes(parsed)
    return built.data, built.model.to(device)


def autocast_dtype(precision: str | None) -> Any:
    """The autocast dtype of a Lightning precision setting ("bf16-mixed" -> bfloat16), None for full precision."""
    import torch

    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision) if precision else "")


@dataclass
class Tuned:
    """What `tune_source` found: the merged config with the sizes filled in, the cells, and the probe (its peaks)."""

    config: dict[str, Any]
    cells: list[Cell]
    probe: StepProbe


def tune_source(
    config_paths: list[str], source: str, device: str, memory_cap: int | None, margin: float, max_rows: int
) -> Tuned:
    """Probes every bucket of train source `source` and fills its batching into the merged config."""
    from omegaconf import OmegaConf

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast); the first two load before the
    # meter's baseline, which then counts only the model
    import lit_sllm.data.datamodule
    import lit_sllm.modules.base  # noqa: F401
    from lit_sllm.data.buckets2d import scan_measures

    merged = OmegaConf.merge(*(OmegaConf.load(path) for path in config_paths))
    resolved = OmegaConf.to_container(merged, resolve=True)
    meter = MemoryMeter(device)
    data, module = build(resolved, device)
    if source not in data.train_specs:
        raise ConfigError(f"data.train.{source}: no such train source; the config has {sorted(data.train_specs)}.")
    plan = data.source_plan(source)
    spec = plan.batching
    if not spec.bucketing:
        raise ConfigError(f"data.train.{source}.batching: not bucketed; set max_duration (and token_buckets) first.")
    cells = worst_cases(plan.grid, scan_measures(plan.shards, plan.encoder, data.duration_scan),
                        plan.read.max_duration, capacity_rows(spec))  # fmt: skip
    budget = int((memory_cap or meter.capacity()) * (1 - margin))
    probe = StepProbe(module, device, budget, autocast_dtype(resolved.get("trainer", {}).get("precision")), meter)
    module.train()
    probe.warm_up(cells[0])
    tune(cells, probe, max_rows)
    batching = merged.data.init_args.train[source].setdefault("batching", {})
    batching.boundaries = list(plan.grid.durations)
    if plan.grid.tokens is not None:
        batching.token_boundaries = [list(edges) for edges in plan.grid.tokens]
    batching.bucket_batch_sizes = batch_sizes(cells, plan.grid)
    return Tuned(OmegaConf.to_container(merged), cells, probe)


def format_cells(cells: list[Cell]) -> str:
    lines = [f"{'bucket':<8}{'worst case':>22}{'rows':>7}{'allowed':>9}{'peak MiB':>10}"]
    for cell in cells:
        case = f"{cell.seconds:.1f} s, {cell.tokens} tok"
        lines.append(f"{cell.row:>3}/{cell.column:<4}{case:>22}{cell.rows:>7}{cell.limit:>9}{cell.peak / 2**20:>10.0f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Writes the tuned config and prints one line per bucket; exit 1 with the reason when it cannot."""
    import sys

    import yaml

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        tuned = tune_source(args.config, args.source, args.device, args.memory_cap, args.margin, args.max_rows)
    except (ConfigError, RuntimeError, OSError, KeyError, ValueError) as err:
        print(f"lit-sllm data tune-batches: {err}", file=sys.stderr)
        return 1
    header = (
        f"# lit-sllm data tune-batches --source {args.source} --device {args.device} --margin {args.margin}"
        + (f" --memory-cap {args.memory_cap}" if args.memory_cap else "")
        + f"\n# from {' + '.join(args.config)}; train with: lit-sllm fit --config {args.out}\n"
    )
    Path(args.out).write_text(header + yaml.safe_dump(tuned.config, sort_keys=False))
    print(format_cells(tuned.cells))
    print(f"wrote {args.out}: data.train.{args.source}.batching.bucket_batch_sizes (rows at the batching limits, "
          "'allowed', are bounded by max_duration/max_tokens/batch_size: raise them to let memory decide)")  # fmt: skip
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tune-batches", help="largest batch per bucket that fits in memory, written into the config",
        description=__doc__,
    )  # fmt: skip
    parser.add_argument("--config", action="append", required=True, help="experiment YAML (repeat to compose)")
    parser.add_argument("--source", required=True, help="the bucketed train source to tune (data.train.<name>)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where to probe (default cuda)")
    parser.add_argument("--memory-cap", type=parse_bytes, default=None, help="memory to fit in, e.g. 40GiB "
                        "(default: the GPU's total, or on the CPU the memory available at start)")  # fmt: skip
    parser.add_argument("--margin", type=float, default=0.1, help="safety margin: fit in (1 - margin) x the cap")
    parser.add_argument("--max-rows", type=int, default=512, help="the most rows a bucket is probed with")
    parser.add_argument("--out", required=True, help="YAML to write: the composed config with the sizes filled in")
    parser.set_defaults(func=run)
