"""The Hugging Face encoder families against Hugging Face's own forward, on padded batches, and by config entry point.

Each family is built here from a tiny random config, so a transformers release that changes what its encoders
compute (or how they take a padding mask) fails these tests rather than silently changing every recipe's frames.
"""

from __future__ import annotations

import pytest
import torch
from conftest import wav2vec2_config, whisper_config
from jsonargparse import ArgumentParser
from transformers import AutoModel, BertConfig, HubertConfig, Wav2Vec2Config

from lit_sllm.config_errors import ConfigError, class_keys
from lit_sllm.models.config import component_config
from lit_sllm.models.encoders import (
    HFSpeechEncoder,
    SpeechEncoder,
    Wav2Vec2SpeechEncoder,
    WhisperSpeechEncoder,
    conv_output_lengths,
)

WINDOW = 16000  # samples in the tiny Whisper's window: 50 positions x 2 mel frames x 160-sample hop
CLIPS = torch.tensor([WINDOW, 11360, 4801])  # 100, 71 and 30 mel frames: an odd count reaches into the padding


def _save(model_class, config, folder):
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Tiny random checkpoints by name: a Whisper with a 1 s window and three wav2vec2-family models."""
    from transformers import HubertModel, Wav2Vec2Model, WhisperModel

    whisper = whisper_config(max_source_positions=50)  # a 1 s window
    folder = tmp_path_factory.mktemp
    return {
        "whisper": _save(WhisperModel, whisper, folder("whisper")),
        "hubert": _save(HubertModel, wav2vec2_config(HubertConfig, "layer"), folder("hubert")),
        "wav2vec2": _save(Wav2Vec2Model, wav2vec2_config(Wav2Vec2Config, "layer"), folder("wav2vec2")),
        "wav2vec2-group-norm": _save(Wav2Vec2Model, wav2vec2_config(Wav2Vec2Config, "group"), folder("w2v2_gn")),
    }


def _audio(lengths: torch.Tensor) -> torch.Tensor:
    audio = 0.1 * torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(0))
    return audio * (torch.arange(audio.shape[1])[None] < lengths[:, None])  # (N, S), zero past each clip


@torch.no_grad()
def test_whisper_matches_hugging_face_on_full_window_clips(checkpoints):
    encoder = WhisperSpeechEncoder(str(checkpoints["whisper"])).eval()
    theirs_model = AutoModel.from_pretrained(checkpoints["whisper"]).get_encoder().eval()
    audio, lengths = _audio(torch.tensor([WINDOW, WINDOW])), torch.tensor([WINDOW, WINDOW])
    ours, our_lengths = encoder(audio, lengths)
    features, _ = encoder.features(audio, lengths)  # (N, M, 100): exactly the window WhisperEncoder.forward takes
    theirs = theirs_model(input_features=features).last_hidden_state  # (N, 50, D)
    assert our_lengths.tolist() == [theirs.shape[1]] * 2 == [50, 50]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["hubert", "wav2vec2", "wav2vec2-group-norm"])
@torch.no_grad()
def test_wav2vec2_family_matches_hugging_face_on_unpadded_clips(checkpoints, name):
    encoder = Wav2Vec2SpeechEncoder(str(checkpoints[name]), normalize_waveform=False).eval()
    theirs_model = AutoModel.from_pretrained(checkpoints[name]).eval()
    for n in CLIPS.tolist():
        audio, lengths = _audio(torch.tensor([n])), torch.tensor([n])
        ours, our_lengths = encoder(audio, lengths)
        theirs = theirs_model(input_values=audio).last_hidden_state  # (1, T, D)
        assert int(our_lengths) == theirs.shape[1]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["whisper", "hubert", "wav2vec2"])
@torch.no_grad()
def test_a_padded_row_gives_the_frames_of_its_clip_alone(checkpoints, name):
    encoder = HFSpeechEncoder(str(checkpoints[name])).eval()
    audio = _audio(CLIPS)
    frames, lengths = encoder(audio, CLIPS)  # (N, T, D), (N,)
    assert frames.shape == (3, int(lengths.max()), encoder.output_dim)
    for row, n in enumerate(CLIPS.tolist()):
        alone, alone_length = encoder(audio[row : row + 1, :n], CLIPS[row : row + 1])
        assert alone.shape[1] == int(alone_length) == int(lengths[row])
        torch.testing.assert_close(frames[row, : int(lengths[row])], alone[0], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_whisper_frame_counts_follow_the_hop_and_convolution_strides(checkpoints):
    encoder = WhisperSpeechEncoder(str(checkpoints["whisper"])).eval()
    samples = torch.tensor([WINDOW, WINDOW - 1, 3201, 3200, 3199, 480, 320])
    mel_frames = samples // 160  # 10 ms hop
    expected = (mel_frames - 1) // 2 + 1  # stride-1 then stride-2 convolution, kernel 3, padding 1
    assert encoder(_audio(samples), samples)[1].tolist() == expected.tolist()
    assert expected[0] == encoder.model.max_source_positions


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation", [(3, 1, 1, 1), (3, 2, 1, 1), (10, 5, 0, 1), (4, 4, 0, 1), (5, 3, 2, 2)]
)
def test_conv_output_lengths_is_the_convolutions_own(kernel, stride, padding, dilation):
    conv = torch.nn.Conv1d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    lengths = torch.arange(12, 40)
    assert conv_output_lengths(lengths, conv).tolist() == [conv(torch.zeros(1, 1, n)).shape[-1] for n in lengths]


def test_hf_speech_encoder_builds_the_family_of_the_checkpoint(checkpoints):
    assert type(HFSpeechEncoder(str(checkpoints["whisper"]))) is WhisperSpeechEncoder
    assert type(HFSpeechEncoder(str(checkpoints["hubert"]), normalize_waveform=False)) is Wav2Vec2SpeechEncoder
    assert HFSpeechEncoder(str(checkpoints["hubert"]), normalize_waveform=False).normalize is False


def test_configs_name_hf_speech_encoder_and_checkpoints_rebuild_the_family(checkpoints):
    parser = ArgumentParser()
    parser.add_argument("--encoder", type=SpeechEncoder)
    entry = {"class_path": "lit_sllm.models.encoders.HFSpeechEncoder", "init_args": {"name_or_path": "x"}}
    entry["init_args"]["name_or_path"] = str(checkpoints["whisper"])
    encoder = parser.instantiate_classes(parser.parse_object({"encoder": entry})).encoder
    assert type(encoder) is WhisperSpeechEncoder
    recorded = component_config(encoder)  # what a checkpoint or export stores
    assert recorded["class_path"] == "lit_sllm.models.encoders.WhisperSpeechEncoder"
    rebuilt = parser.instantiate_classes(parser.parse_object({"encoder": recorded})).encoder
    audio = _audio(CLIPS)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(audio, CLIPS)[0], encoder.eval()(audio, CLIPS)[0])


def test_an_unknown_model_type_names_the_key_and_the_families(tmp_path):
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    message = (
        r"model\.init_args\.encoder\.init_args\.name_or_path: .* 'bert' checkpoint .* supported model_type values: "
        r"whisper \(WhisperSpeechEncoder\); wav2vec2, hubert, .* \(Wav2Vec2SpeechEncoder\)"
    )
    with pytest.raises(ConfigError, match=message):
        HFSpeechEncoder(str(tmp_path))


def test_a_family_refuses_another_familys_checkpoint(checkpoints):
    with pytest.raises(ConfigError, match=r"'hubert' checkpoint"):
        WhisperSpeechEncoder(str(checkpoints["hubert"]))
    with pytest.raises(ConfigError, match=r"'whisper' checkpoint"):
        Wav2Vec2SpeechEncoder(str(checkpoints["whisper"]))


def test_the_entry_points_keys_are_its_factory_arguments():
    """A misspelt `encoder.init_args` key is matched against these (`config_errors.explain_parse_error`)."""
    assert class_keys(HFSpeechEncoder) == [
        "name_or_path", "load_weights", "normalize_waveform", "trust_remote_code", "spec_augment"
    ]  # fmt: skip
