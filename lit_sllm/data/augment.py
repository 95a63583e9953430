"""Speech augmentation of a training source: a chain of named transforms with probabilities, run in the DataLoader
workers on each decoded sample, before the source's own transform (e.g. MTBI) and encoding.

Configured per train source as `data.train.<name>.augment`, a list such as

    - {name: speed, p: 1.0, factors: [0.9, 1.0, 1.1]}
    - {name: noise, p: 0.5, snr_db: [10, 20], source: /data/musan/noise}
    - {name: reverb, p: 0.2}

Each sample's draws come from a generator seeded by the data seed, the epoch, the source, the sample key and how
often that key came before in the stream, so a run repeats exactly and a resumed run gives a sample the augmentation
it would have had without the interruption. Word times follow speed changes. Every application to a sample that
reaches a batch is counted (`batch.extras["augment"]`, logged as `data/augment/<transform>`). Evaluation sets are
never augmented.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.augment_transforms import TRANSFORMS, Transform
from lit_sllm.data.schema import Sample

UNDONE = "undone_too_long"  # count name: an augmented sample over the length limit, kept unaugmented


@dataclass
class AugmentStep:
    """One transform of the chain and the chance that it is applied to a sample."""

    name: str
    p: float
    transform: Transform


def _parameters(cls: type[Transform]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def build_step(entry: Any, key: str, sample_rate: int) -> AugmentStep:
    """One validated step from its YAML entry `{name, p, **parameters}`.

    Raises:
        ConfigError: naming `key` and the fix, for an unknown name or parameter, a probability outside [0, 1], a bad
            parameter value, or a noise/RIR source that holds no audio.
    """
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{key}: each entry needs a transform name, e.g. {{name: speed, p: 1.0}}; got {entry!r}.")
    params = dict(entry)
    name, p = params.pop("name"), params.pop("p", 1.0)
    if name not in TRANSFORMS:
        near = difflib.get_close_matches(str(name), TRANSFORMS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{key}.name: unknown transform {name!r}{hint}; choose one of {sorted(TRANSFORMS)}.")
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ConfigError(f"{key}.p: the probability of {name} must be in [0, 1], got {p!r}.")
    allowed = _parameters(TRANSFORMS[name])
    for param in params:
        if param not in allowed:
            raise ConfigError(f"{key}.{param}: not a parameter of {name}; its parameters are {['p', *allowed]}.")
    try:
        transform = TRANSFORMS[name](**params)
        transform.setup(sample_rate)
    except FileNotFoundError as err:
        raise ConfigError(
            f"{key}: {err} Fix: give a folder of audio files (searched recursively, MUSAN-style) or a shard set."
        ) from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key}: {name}: {err}.") from err
    return AugmentStep(name, float(p), transform)


class Augmentation:
    """The augmentation chain of one training source.

    Args:
        steps: the transforms in order, each applied with its probability.
        sample_rate: the rate of the decoded clips (data.sample_rate).
        max_duration: the source's length limit in seconds; a sample that augmentation makes longer (speed < 1) is
            kept unaugmented and counted as `undone_too_long`, never dropped or cut.
    """

    def __init__(self, steps: list[AugmentStep], sample_rate: int, max_duration: float | None = None) -> None:
        self.steps, self.sample_rate, self.max_duration = steps, sample_rate, max_duration

    @classmethod
    def from_config(
        cls, entries: list[Any], key: str, sample_rate: int, max_duration: float | None = None
    ) -> Augmentation:
        """The chain of a YAML list; `key` (e.g. `data.train.asr.augment`) prefixes every error."""
        if not isinstance(entries, list):
            raise ConfigError(f"{key}: must be a list of transforms like [{{name: speed, p: 1.0}}], got {entries!r}.")
        steps = [build_step(entry, f"{key}[{i}]", sample_rate) for i, entry in enumerate(entries)]
        return cls(steps, sample_rate, max_duration)

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def apply(self, sample: Sample, rng: random.Random) -> tuple[Sample, list[str]]:
        """The augmented sample and the names of the transforms applied to it, in order.

        Clips keep the data's rate; word times and the duration follow length changes; transcript and turns stay.
        """
        names = list(sample.audio)
        if not names:
            return sample, []
        clips = [sample.audio[name][0] for name in names]
        before = sum(clip.numel() for clip in clips)
        applied = []
        for step in self.steps:
            if rng.random() < step.p:
                clips = step.transform(clips, self.sample_rate, rng)
                applied.append(step.name)
        after = sum(clip.numel() for clip in clips)
        if self.max_duration is not None and after / self.sample_rate > self.max_duration:
            return dataclasses.replace(sample), [UNDONE]
        scale = after / before if before else 1.0
        words = None if sample.words is None else [(w, start * scale, end * scale) for w, start, end in sample.words]
        audio = {name: (clip, self.sample_rate) for name, clip in zip(names, clips)}
        return dataclasses.replace(sample, audio=audio, words=words, duration=after / self.sample_rate), applied

    def stream(self, samples: Iterator[Sample], seed: str) -> Iterator[Sample]:
        """Augments a stream; `seed` names the stream's data seed, epoch and source. Each sample records the
        transforms applied to it in `Sample.augmented`, which its batch counts."""
        seen: Counter = Counter()
        for sample in samples:
            rng = random.Random(f"{seed}/{sample.key}/{seen[sample.key]}")
            seen[sample.key] += 1
            augmented, applied = self.apply(sample, rng)
            augmented.augmented = applied
            yield augmented
