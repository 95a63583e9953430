"""Speech encoders: waveforms in, frame embeddings out, with the exact number of valid frames per clip.

One class per family of Hugging Face checkpoint, each loaded with `from_pretrained(name_or_path)`:
`WhisperSpeechEncoder` and `Wav2Vec2SpeechEncoder` (wav2vec2, HuBERT and their kin). `HFSpeechEncoder`, the name the
configs use, picks the family from the checkpoint's config. `ConformerEncoder` is a torchaudio Conformer for
training from scratch or from our own checkpoints.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.masking_utils import create_bidirectional_mask

from lit_sllm.config_errors import ConfigError, load_pretrained
from lit_sllm.models.config import component_config, init_args_of
from lit_sllm.models.features import LogMelFeatures, lengths_to_mask, normalize_waveform
from lit_sllm.models.spec_augment import SpecAugment


class SpeechEncoder(nn.Module):
    """Interface of every encoder: `forward(audio (N, S), audio_lengths (N,)) -> (frames (N, T, D), lengths (N,))`."""

    output_dim: int
    sample_rate: int

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def frames_at(self, samples: Tensor) -> Tensor:
        """Encoder frames the first `samples` samples of a clip make up: (P,) -> (P,), monotone, and equal to the
        clip's valid frame count at its length. Frame-level interleaving cuts encoded clips with it."""
        raise NotImplementedError(
            f"{type(self).__name__} does not map samples to its frames, so its clips cannot be cut after encoding; "
            "define `frames_at(samples)` on it, or set BehaviourImitation's interleave_level: clips."
        )

    def portable_init_args(self, folder: Path) -> dict:
        """Init args that rebuild this encoder's architecture from files under `folder` alone (weights are saved
        beside them by the exporter), so an export does not depend on the original checkpoint path."""
        return {k: v for k, v in self.init_args.items() if k != "checkpoint"}


def _config_of(module: nn.Module | None) -> dict | None:
    """A sub-component's config as init args record it, so that the encoder's own config stays plain data."""
    return None if module is None else component_config(module)


ENCODER_KEY = "model.init_args.encoder.init_args"


def _load_config(name_or_path: str, trust_remote_code: bool, model_types: Sequence[str]) -> PretrainedConfig:
    """The checkpoint's config, refused by config key unless its `model_type` is one of `model_types`."""
    config = load_pretrained(
        f"{ENCODER_KEY}.name_or_path",
        "speech encoder",
        name_or_path,
        lambda: AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code),
    )
    if config.model_type not in model_types:
        supported = "; ".join(f"{', '.join(family.model_types)} ({family.__name__})" for family in HF_FAMILIES)
        raise ConfigError(
            f"{ENCODER_KEY}.name_or_path: {name_or_path} is a '{config.model_type}' checkpoint (config model_type), "
            f"which this encoder does not read; supported model_type values: {supported}. For anything else use "
            "ConformerEncoder or a SpeechEncoder of your own."
        )
    return config


def _load_model(name_or_path: str, config: PretrainedConfig, load_weights: bool, trust_remote_code: bool) -> nn.Module:
    if load_weights:
        return AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return AutoModel.from_config(config, trust_remote_code=trust_remote_code)


def conv_output_lengths(lengths: Tensor, conv: nn.Conv1d) -> Tensor:
    """Valid output frames of a 1-D convolution on inputs of `lengths` valid frames: (N,) -> (N,)."""
    (kernel,), (stride,), (padding,), (dilation,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return (lengths + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class _HFEncoder(SpeechEncoder):
    """What the Hugging Face families share: 16 kHz input, and exports that rebuild from the config alone."""

    model_types: tuple[str, ...]
    sample_rate = 16000

    def portable_init_args(self, folder: Path) -> dict:
        self.model.config.save_pretrained(folder)
        return {**self.init_args, "name_or_path": str(folder), "load_weights": False}


class WhisperSpeechEncoder(_HFEncoder):
    """The encoder half of a Whisper checkpoint, on clips of any length up to its window.

    `WhisperEncoder.forward` is not called as a whole because it takes exactly `2 * max_source_positions` mel frames
    (30 s for OpenAI's checkpoints; it raises on anything else) and passes no attention mask to its layers: every
    clip would pay for the whole window, and a clip's frames would attend to the padding after it, so they would
    depend on the window rather than on the clip. Instead the encoder's own modules run in that forward's order on
    the batch's longest clip, and each `WhisperEncoderLayer` gets the key padding mask transformers builds for the
    model's attention implementation; a clip's frames are then the same alone as in a padded batch. Tests compare
    this path with `WhisperEncoder.forward` on full-window clips, so a transformers change to that forward fails CI.

    Args:
        name_or_path: hub id or local folder of a Whisper checkpoint (e.g. `openai/whisper-small`); its decoder is
            dropped.
        load_weights: False builds the architecture from the config alone (random init, or on the meta device to
            count parameters).
        trust_remote_code: passed to transformers; keep off unless the checkpoint needs it.
        spec_augment: masks on the log-mel features while training (off when null).
    """

    model_types = ("whisper",)

    def __init__(
        self,
        name_or_path: str,
        load_weights: bool = True,
        trust_remote_code: bool = False,
        spec_augment: SpecAugment | None = None,
    ) -> None:
        self_args = init_args_of(locals()) | {"spec_augment": _config_of(spec_augment)}
        super().__init__()
        self.init_args = self_args
        config = _load_config(name_or_path, trust_remote_code, self.model_types)
        self.model = _load_model(name_or_path, config, load_weights, trust_remote_code).get_encoder()
        self.output_dim = config.d_model
        self.features = LogMelFeatures(n_mels=config.num_mel_bins, whisper_scaling=True)
        self.spec_augment = spec_augment

    def output_lengths(self, feature_lengths: Tensor) -> Tensor:
        """Encoder frames of clips with `feature_lengths` mel frames, through the encoder's two convolutions."""
        return conv_output_lengths(conv_output_lengths(feature_lengths, self.model.conv1), self.model.conv2)

    def frames_at(self, samples: Tensor) -> Tensor:
        return self.output_lengths(self.features.output_lengths(samples))

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms at 16 kHz -> (N, T, D) frames and (N,) valid frame counts."""
        features, lengths = self.features(audio, audio_lengths)  # (N, M, T_mel)
        if self.spec_augment is not None:
            features = self.spec_augment(features, lengths)
        return self.encode(features.to(self.model.conv1.weight.dtype), lengths)

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, M, T_mel) log-mel features with (N,) valid frame counts -> (N, T, D) frames and (N,) valid counts."""
        encoder = self.model
        hidden = nn.functional.gelu(encoder.conv1(features))  # (N, D, T_mel)
        # zero the frames past each clip, as the convolution's own padding would be for the clip alone
        hidden = hidden * lengths_to_mask(conv_output_lengths(lengths, encoder.conv1), hidden.shape[-1])[:, None, :]
        hidden = nn.functional.gelu(encoder.conv2(hidden)).transpose(1, 2)  # (N, T, D)
        if hidden.shape[1] > encoder.max_source_positions:
            stride = encoder.conv1.stride[0] * encoder.conv2.stride[0] * self.features.hop_length
            seconds = encoder.max_source_positions * stride / self.sample_rate
            raise ValueError(
                f"A clip is longer than this Whisper encoder's {seconds:.0f} s window; set the data's max_duration "
                f"to at most {seconds:.0f} (or on_too_long: clip)."
            )
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        hidden = hidden + encoder.embed_positions(positions)  # (N, T, D)
        hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
        out_lengths = self.output_lengths(lengths)
        mask = create_bidirectional_mask(encoder.config, hidden, lengths_to_mask(out_lengths, hidden.shape[1]))
        for layer in encoder.layers:
            if encoder.training and encoder.layerdrop > 0 and torch.rand([]) < encoder.layerdrop:
                continue  # LayerDrop, as WhisperEncoder.forward skips layers
            hidden = layer(hidden, mask)  # (N, T, D)
        return encoder.layer_norm(hidden), out_lengths


class Wav2Vec2SpeechEncoder(_HFEncoder):
    """A wav2vec2-family checkpoint (wav2vec2, HuBERT, WavLM, ...): waveforms in, CTC-style frames out, through the
    model's own forward.

    Models with a layer-norm feature extractor get the padding mask; those with a group-norm one (wav2vec2-base)
    were trained on zero padding without a mask, so they get none, as their feature extractors advise, and a padded
    clip's frames then differ slightly from the clip's alone.

    Args:
        name_or_path: hub id or local folder (e.g. `facebook/hubert-large-ll60k`); a `*ForCTC` head is dropped.
        load_weights: False builds the architecture from the config alone (random init, or on the meta device to
            count parameters).
        normalize_waveform: zero-mean/unit-variance input per clip (as the family's feature extractors do).
        trust_remote_code: passed to transformers; keep off unless the checkpoint needs it.
    """

    model_types = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech-sat")

    def __init__(
        self,
        name_or_path: str,
        load_weights: bool = True,
        normalize_waveform: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self_args = init_args_of(locals())
        super().__init__()
        self.init_args = self_args
        config = _load_config(name_or_path, trust_remote_code, self.model_types)
        self.model = _load_model(name_or_path, config, load_weights, trust_remote_code)
        self.output_dim = config.hidden_size
        self.normalize = normalize_waveform
        self.masked = getattr(config, "feat_extract_norm", "layer") == "layer"  # data2vec-audio: always layer norm

    def output_lengths(self, audio_lengths: Tensor) -> Tensor:
        """Frames of clips with `audio_lengths` samples, through the model's convolution strides (and adapter)."""
        return self.model._get_feat_extract_output_lengths(audio_lengths).long()

    def frames_at(self, samples: Tensor) -> Tensor:
        return self.output_lengths(samples).clamp(min=0)  # the convolutions' formula goes negative below one frame

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms at 16 kHz -> (N, T, D) frames and (N,) valid frame counts."""
        if self.normalize:
            audio = normalize_waveform(audio, audio_lengths)
        mask = lengths_to_mask(audio_lengths, audio.shape[-1]).long() if self.masked else None  # (N, S)
        hidden = self.model(input_values=audio, attention_mask=mask).last_hidden_state  # (N, T, D)
        return hidden, self.output_lengths(audio_lengths)


HF_FAMILIES: tuple[type[_HFEncoder], ...] = (WhisperSpeechEncoder, Wav2Vec2SpeechEncoder)


class HFSpeechEncoder(SpeechEncoder):
    """Any supported Hugging Face speech checkpoint by path: builds the family class its config's `model_type`
    names (`WhisperSpeechEncoder`, `Wav2Vec2SpeechEncoder`) and returns that; the configs' entry point.

    Args:
        name_or_path: hub id or local folder with the checkpoint (e.g. `openai/whisper-small`,
            `facebook/hubert-large-ll60k`).
        load_weights: False builds the architecture from the config alone (random init, or on the meta device to
            count parameters).
        normalize_waveform: zero-mean/unit-variance input for the wav2vec2 family (as their feature extractors do);
            Whisper reads log-mel features and ignores it.
        trust_remote_code: passed to transformers; keep off unless the checkpoint needs it.
        spec_augment: masks on the log-mel features while training (Whisper only; off when null).
    """

    def __new__(
        cls,
        name_or_path: str,
        load_weights: bool = True,
        normalize_waveform: bool = True,
        trust_remote_code: bool = False,
        spec_augment: SpecAugment | None = None,
    ) -> SpeechEncoder:
        model_types = [model_type for family in HF_FAMILIES for model_type in family.model_types]
        model_type = _load_config(name_or_path, trust_remote_code, model_types).model_type
        family = next(family for family in HF_FAMILIES if model_type in family.model_types)
        takes = inspect.signature(family).parameters
        if spec_augment is not None and "spec_augment" not in takes:
            raise ConfigError(
                f"{ENCODER_KEY}.spec_augment: {name_or_path} is a {model_type} encoder, which reads waveforms, not "
                "log-mel features; remove spec_augment (its own config's mask_time_prob masks its hidden features)."
            )
        given = {
            "name_or_path": name_or_path,
            "load_weights": load_weights,
            "normalize_waveform": normalize_waveform,
            "trust_remote_code": trust_remote_code,
            "spec_augment": spec_augment,
        }
        # not an instance of `cls`, so Python does not call `__init__` on it again
        return family(**{name: value for name, value in given.items() if name in takes})


class ConformerEncoder(SpeechEncoder):
    """Log-mel features -> 4x convolutional subsampling -> torchaudio Conformer layers.

    Args:
        n_mels: mel bins of the input features.
        d_model: width of the Conformer.
        num_layers: Conformer layers.
        num_heads: attention heads.
        ffn_dim: feed-forward width.
        kernel_size: depthwise convolution kernel.
        dropout: dropout inside the Conformer.
        checkpoint: folder written by `save_pretrained` to load weights from (its config must match).
        spec_augment: masks on the log-mel features while training (off when null).
    """

    def __init__(
        self,
        n_mels: int = 80,
        d_model: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        kernel_size: int = 15,
        dropout: float = 0.1,
        checkpoint: str | None = None,
        spec_augment: SpecAugment | None = None,
    ) -> None:
        self_args = init_args_of(locals()) | {"spec_augment": _config_of(spec_augment)}
        super().__init__()
        self.init_args = self_args
        from torchaudio.models import Conformer

        self.sample_rate = 16000
        self.output_dim = d_model
        self.features = LogMelFeatures(n_mels=n_mels)
        self.subsample = nn.Sequential(
            nn.Conv1d(n_mels, d_model, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
        )
        self.conformer = Conformer(d_model, num_heads, ffn_dim, num_layers, kernel_size, dropout=dropout)
        self.spec_augment = spec_augment
        if checkpoint is not None:
            self.load_state_dict(load_file(str(Path(checkpoint) / "model.safetensors")))

    def frames_at(self, samples: Tensor) -> Tensor:
        lengths = self.features.output_lengths(samples)
        for _ in range(2):  # the two stride-2 convolutions
            lengths = (lengths - 1) // 2 + 1
        return lengths

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        features, lengths = self.features(audio, audio_lengths)  # (N, M, T)
        if self.spec_augment is not None:
            features = self.spec_augment(features, lengths)
        hidden = self.subsample(features).transpose(1, 2)  # (N, T/4, D)
        lengths = self.frames_at(audio_lengths).clamp(min=1, max=hidden.shape[1])
        # torchaudio's Conformer sizes its padding mask from the longest clip.
        return self.conformer(hidden[:, : int(lengths.max())], lengths)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in self.init_args.items() if k not in ("checkpoint", "spec_augment")}  # training-only
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ConformerEncoder:
        config = json.loads((Path(folder) / "config.json").read_text())
        return cls(**config, checkpoint=str(folder))
