"""`lit-sllm data inspect --augment`: hear and see what training sees. A few samples of an augmented source go
through its augmentation chain exactly as in training; each is written as WAV before and after, and one PNG shows
their spectrograms side by side, titled with the transforms that were applied.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.augment import Augmentation
from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, resolve_shards
from lit_sllm.data.schema import Sample


def augmented_source(config_paths: list[str], source: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(source name, its `data.train.<name>` section, the data section) of composed experiment YAMLs.

    Raises:
        ConfigError: when no train source has `augment`, or `source` names none.
    """
    from omegaconf import OmegaConf

    merged = OmegaConf.to_container(OmegaConf.merge(*(OmegaConf.load(p) for p in config_paths)), resolve=True)
    data = merged.get("data") or {}
    data = data.get("init_args", data)
    train = data.get("train") or {}
    augmented = [name for name, spec in train.items() if (spec or {}).get("augment")]
    if source is None and augmented:
        source = augmented[0]
    if source not in augmented:
        raise ConfigError(
            f"data.train.{source or '<name>'}.augment: {config_paths} give no augmentation for "
            f"{'that source' if source else 'any train source'} (augmented: {augmented}); pass the YAMLs that set "
            "it, composed as for `lit-sllm fit --config`, and --source NAME."
        )
    return source, train[source], data


def spectrogram_db(wave: torch.Tensor, n_fft: int = 512, hop: int = 160) -> torch.Tensor:
    """(F, T) power spectrogram in dB."""
    power = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().pow(2)
    return 10 * torch.log10(power.clamp(min=1e-10))


def plot_spectrograms(rows: list[tuple[str, torch.Tensor, torch.Tensor, list[str]]], rate: int, path: Path) -> None:
    """One PNG: per sample, its spectrogram before (left) and after (right) augmentation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("The spectrogram picture needs matplotlib: pip install 'lit-sllm[notebooks]'.") from err
    figure, axes = plt.subplots(len(rows), 2, figsize=(12, 2.4 * len(rows)), squeeze=False)
    for (key, before, after, applied), (left, right) in zip(rows, axes):
        pair = (spectrogram_db(before), spectrogram_db(after))
        peak = max(float(db.max()) for db in pair)  # one colour scale per row, so gain changes show
        for axis, wave, db, title in (
            (left, before, pair[0], f"{key}: original"),
            (right, after, pair[1], ", ".join(applied) or "none"),
        ):
            extent = (0, wave.numel() / rate, 0, rate / 2000)
            axis.imshow(db.numpy(), origin="lower", aspect="auto", extent=extent, vmin=peak - 80, vmax=peak)
            axis.set_title(title, fontsize=9)
            axis.set_ylabel("kHz")
        right.set_xlabel("s")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def first_samples(shards: str | list[str], read: ReadConfig, count: int) -> list[Sample]:
    """The first `count` usable samples with audio, in shard order."""
    samples = finite_samples(resolve_shards(shards), read, Slot(), DataTally(warn_limit=0))
    return list(itertools.islice((s for s in samples if s.audio), count))


def write_examples(
    config_paths: list[str],
    out: str | Path,
    source: str | None = None,
    examples: int = 4,
    each: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes `<out>/<i>_<key>_original.wav`, `..._augmented.wav` and `<out>/spectrograms.png`.

    Args:
        config_paths: experiment YAMLs, composed in order (as `lit-sllm fit --config` does).
        out: folder for the files (created).
        source: the train source to show (default: the first with `augment`).
        examples: samples to show.
        each: show every transform alone (p = 1) on one sample each, instead of the chain as training draws it.
        seed: seeds the draws (training seeds them by data seed, epoch and key; this shows one such draw).

    Returns:
        {"source", "png", "examples": [{"key", "applied", "original", "augmented", "seconds"}, ...]}.
    """
    name, spec, data = augmented_source(config_paths, source)
    rate = int(data.get("sample_rate", 16000))
    chain = Augmentation.from_config(spec["augment"], f"data.train.{name}.augment", rate)
    chains = [chain] if not each else [Augmentation([dataclasses.replace(s, p=1.0)], rate) for s in chain.steps]
    samples = first_samples(spec["shards"], ReadConfig(sample_rate=rate), examples if not each else len(chains))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows, report = [], []
    for index, sample in enumerate(samples):
        one = chains[index % len(chains)]
        augmented, applied = one.apply(sample, random.Random(f"{seed}/inspect/{sample.key}"))
        clip_name = next(iter(sample.audio))
        before, after = sample.audio[clip_name][0], augmented.audio[clip_name][0]
        paths = {kind: folder / f"{index}_{sample.key}_{kind}.wav" for kind in ("original", "augmented")}
        for kind, wave in (("original", before), ("augmented", after)):
            sf.write(paths[kind], wave.clamp(-1, 1).numpy(), rate, subtype="PCM_16")
        rows.append((sample.key, before, after, applied))
        report.append(
            {"key": sample.key, "applied": applied, "seconds": [before.numel() / rate, after.numel() / rate]}
            | {kind: str(path) for kind, path in paths.items()}
        )
    png = folder / "spectrograms.png"
    plot_spectrograms(rows, rate, png)
    return {"source": name, "png": str(png), "examples": report}
