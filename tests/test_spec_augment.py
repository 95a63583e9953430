"""SpecAugment on the encoder's features: masks inside each clip's valid frames, only while the model trains (also
with a frozen encoder), configurable from YAML and rebuilt from the model's config."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lit_sllm.config_errors import ConfigError
from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import ConformerEncoder, HFSpeechEncoder
from lit_sllm.models.freezing import Trainable
from lit_sllm.models.llm import LLMSpec
from lit_sllm.models.spec_augment import SpecAugment
from lit_sllm.models.speech_llm import SpeechLLM


def test_masks_stay_inside_each_clip_and_cover_the_expected_share():
    torch.manual_seed(0)
    augment = SpecAugment(freq_masks=2, freq_width=8, time_masks=4, time_width=0.1, max_time_width=None)
    lengths = torch.tensor([400, 100, 250])
    masks = torch.stack([augment.masks(lengths, 80, 400) for _ in range(200)])  # (R, N, M, T)
    time_only = masks.all(dim=2)  # (R, N, T): frames masked at every frequency
    for row, length in enumerate(lengths.tolist()):
        assert not time_only[:, row, length:].any()  # never in the padding
        share = float(time_only[:, row, :length].float().mean())
        assert 0.1 < share < 0.2  # 4 masks of up to 10 % (mean 5 %) each, some overlapping
    freq_only = masks.all(dim=3)  # (R, N, M): bins masked at every frame
    assert 0.05 < float(freq_only.float().mean()) < 0.11  # 2 masks of mean width 4 of 80 bins: <= 10 %


def test_only_training_features_are_masked():
    augment = SpecAugment()
    features, lengths = torch.randn(2, 80, 300), torch.tensor([300, 200])
    assert torch.equal(augment.eval()(features, lengths), features)
    masked = augment.train()(features, lengths)
    assert (masked == 0).sum() > 0 and torch.equal(masked[masked != 0], features[masked != 0])


def whisper_llm(llm_dir, encoder_dir, encoder_trains: bool) -> SpeechLLM:
    encoder = HFSpeechEncoder(str(encoder_dir), spec_augment=SpecAugment(freq_width=4, time_masks=2))
    trainable = Trainable(encoder=encoder_trains, adapter=True, llm=False, lora=False)
    return SpeechLLM(LLMSpec(str(llm_dir)), encoder, partial(FrameStackMLP, stack=2), None, trainable)


@pytest.mark.parametrize("encoder_trains", [True, False])
def test_the_model_masks_in_training_only_even_with_a_frozen_encoder(tiny_llm_dir, tiny_whisper_dir, encoder_trains):
    model = whisper_llm(tiny_llm_dir, tiny_whisper_dir, encoder_trains)
    audio, lengths = 0.1 * torch.randn(2, 8000), torch.tensor([8000, 5000])
    model.eval()
    assert torch.equal(model.embed_audio(audio, lengths)[0], model.embed_audio(audio, lengths)[0])
    clean = model.embed_audio(audio, lengths)[0]
    model.train()
    assert model.encoder.training == encoder_trains and model.encoder.spec_augment.training
    assert not torch.allclose(model.embed_audio(audio, lengths)[0], clean)
    rebuilt = SpeechLLM.from_config(model.config())
    assert isinstance(rebuilt.encoder.spec_augment, SpecAugment)
    assert rebuilt.encoder.spec_augment.init_args == model.encoder.spec_augment.init_args


def test_conformer_takes_spec_augment_and_saves_without_it(tmp_path):
    encoder = ConformerEncoder(n_mels=16, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, spec_augment=SpecAugment())
    encoder.save_pretrained(tmp_path)
    assert ConformerEncoder.from_pretrained(tmp_path).spec_augment is None  # a training-only setting


def test_waveform_encoders_refuse_spec_augment(tiny_hubert_dir):
    with pytest.raises(ConfigError, match=r"encoder\.init_args\.spec_augment: .* hubert encoder, which reads wave"):
        HFSpeechEncoder(str(tiny_hubert_dir), spec_augment=SpecAugment())
