"""Speech encoders: waveforms in, frame embeddings out, with the exact number of valid frames per clip.

`HFSpeechEncoder` loads any Whisper or wav2vec2-family checkpoint with `from_pretrained(name_or_path)`;
`ConformerEncoder` is a torchaudio Conformer for training from scratch or from our own checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

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

    def portable_init_args(self, folder: Path) -> dict:
        """Init args that rebuild this encoder's architecture from files under `folder` alone (weights are saved
        beside them by the exporter), so an export does not depend on the original checkpoint path."""
        return {k: v for k, v in self.init_args.items() if k != "checkpoint"}


def _config_of(module: nn.Module | None) -> dict | None:
    """A sub-component's config as init args record it, so that the encoder's own config stays plain data."""
    return None if module is None else component_config(module)


def padding_bias(lengths: Tensor, max_len: int, dtype: torch.dtype) -> Tensor:
    """(N,) lengths -> (N, 1, 1, T) additive attention bias that hides padded keys."""
    valid = lengths_to_mask(lengths, max_len)[:, None, None, :]
    return torch.zeros(valid.shape, dtype=dtype, device=lengths.device).masked_fill(~valid, torch.finfo(dtype).min)


def _whisper_forward(encoder: nn.Module, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Whisper's encoder on variable-length input: no padding to 30 s, padded frames hidden from attention."""
    hidden = nn.functional.gelu(encoder.conv1(features))  # (N, D, T_mel)
    # zero the frames past each clip, as the convolution's own padding would be for the clip alone
    hidden = hidden * lengths_to_mask(lengths, hidden.shape[-1])[:, None, :]
    hidden = nn.functional.gelu(encoder.conv2(hidden)).transpose(1, 2)  # (N, T, D)
    positions = encoder.embed_positions.weight
    if hidden.shape[1] > positions.shape[0]:
        seconds = positions.shape[0] * 2 * 0.01
        raise ValueError(
            f"A clip is longer than this Whisper encoder's {seconds:.0f} s window; set the data's max_duration "
            f"to at most {seconds:.0f} (or on_too_long: clip)."
        )
    hidden = hidden + positions[: hidden.shape[1]]
    out_lengths = (lengths - 1) // 2 + 1
    bias = padding_bias(out_lengths, hidden.shape[1], hidden.dtype)
    for layer in encoder.layers:
        hidden = layer(hidden, bias)
    return encoder.layer_norm(hidden), out_lengths


def _wav2vec2_forward(model: nn.Module, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    # Models with group-norm feature extractors (wav2vec2-base) were trained on zero padding without a mask.
    mask = lengths_to_mask(lengths, audio.shape[-1]).long() if model.config.feat_extract_norm == "layer" else None
    hidden = model(input_values=audio, attention_mask=mask).last_hidden_state
    return hidden, model._get_feat_extract_output_lengths(lengths).long()


# model_type -> how its inputs are made; a new family is one entry here.
_WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech-sat")


class HFSpeechEncoder(SpeechEncoder):
    """A Hugging Face speech encoder, loaded exactly as a real run loads it.

    Args:
        name_or_path: hub id or local folder with the checkpoint (e.g. `openai/whisper-small`,
            `facebook/hubert-large-ll60k`).
        load_weights: False builds the architecture from the config alone (random init, or on the meta device to
            count parameters).
        normalize_waveform: zero-mean/unit-variance input for the wav2vec2 family (as their feature extractors do).
        trust_remote_code: passed to transformers; keep off unless the checkpoint needs it.
        spec_augment: masks on the log-mel features while training (Whisper only; off when null).
    """

    def __init__(
        self,
        name_or_path: str,
        load_weights: bool = True,
        normalize_waveform: bool = True,
        trust_remote_code: bool = False,
        spec_augment: SpecAugment | None = None,
    ) -> None:
        self_args = init_args_of(locals()) | {"spec_augment": _config_of(spec_augment)}
        super().__init__()
        self.init_args = self_args
        config = load_pretrained(
            "model.init_args.encoder.init_args.name_or_path",
            "speech encoder",
            name_or_path,
            lambda: AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code),
        )
        self.model_type = config.model_type
        if self.model_type != "whisper" and self.model_type not in _WAV2VEC2_FAMILY:
            raise ValueError(
                f"{name_or_path}: encoder model_type '{self.model_type}' is not supported by HFSpeechEncoder; "
                f"use a Whisper or one of {_WAV2VEC2_FAMILY} checkpoint, or ConformerEncoder."
            )
        self.model = _load_encoder(name_or_path, config, load_weights, trust_remote_code)
        self.normalize = normalize_waveform
        self.sample_rate = 16000
        self.output_dim = config.d_model if self.model_type == "whisper" else config.hidden_size
        self.features = (
            LogMelFeatures(n_mels=config.num_mel_bins, whisper_scaling=True) if self.model_type == "whisper" else None
        )
        if spec_augment is not None and self.features is None:
            raise ConfigError(
                f"model.init_args.encoder.init_args.spec_augment: {name_or_path} is a {self.model_type} encoder, "
                "which reads waveforms, not log-mel features; remove spec_augment (its own config's mask_time_prob "
                "masks its hidden features)."
            )
        self.spec_augment = spec_augment

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms at 16 kHz -> (N, T, D) frames and (N,) valid frame counts."""
        if self.features is not None:
            features, lengths = self.features(audio, audio_lengths)  # (N, M, T)
            if self.spec_augment is not None:
                features = self.spec_augment(features, lengths)
            return _whisper_forward(self.model, features.to(self.model.conv1.weight.dtype), lengths)
        if self.normalize:
            audio = normalize_waveform(audio, audio_lengths)
        return _wav2vec2_forward(self.model, audio, audio_lengths)

    def portable_init_args(self, folder: Path) -> dict:
        self.model.config.save_pretrained(folder)
        return {**self.init_args, "name_or_path": str(folder), "load_weights": False}


def _load_encoder(
    name_or_path: str, config: PretrainedConfig, load_weights: bool, trust_remote_code: bool
) -> nn.Module:
    if load_weights:
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    else:
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    # Whisper checkpoints hold a decoder too; only the encoder is kept.
    return model.get_encoder() if config.model_type == "whisper" else model


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

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        features, lengths = self.features(audio, audio_lengths)  # (N, M, T)
        if self.spec_augment is not None:
            features = self.spec_augment(features, lengths)
        hidden = self.subsample(features).transpose(1, 2)  # (N, T/4, D)
        for _ in range(2):
            lengths = (lengths - 1) // 2 + 1
        lengths = lengths.clamp(min=1, max=hidden.shape[1])
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
