"""`lit-sllm params` on the shipped VoiceTextBlender config: component sizes match the paper, no weights needed."""

from __future__ import annotations

import re

import pytest
from conftest import build_tokenizer
from transformers import GemmaConfig, WhisperConfig

from lit_sllm.cli import main

PAPER = {"lora": 36e6, "adapter": 52e6}  # VoiceTextBlender, Gemma-2B + LoRA r=32 + 2-layer 1024-wide Conformer


@pytest.fixture()
def vtb_shaped_paths(tmp_path, monkeypatch):
    gemma_2b = GemmaConfig(
        vocab_size=256000,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
    )
    gemma_2b.save_pretrained(tmp_path / "gemma")
    build_tokenizer(tmp_path / "gemma")
    encoder = WhisperConfig(d_model=1024, encoder_layers=24, encoder_attention_heads=16, decoder_attention_heads=16)
    encoder.save_pretrained(tmp_path / "encoder")
    monkeypatch.setenv("LIT_SLLM_LLM", str(tmp_path / "gemma"))
    monkeypatch.setenv("LIT_SLLM_ENCODER", str(tmp_path / "encoder"))


def test_vtb_parameter_table_matches_paper_on_meta_device(vtb_shaped_paths, capsys):
    assert main(["params", "--config", "experiments/vtb/voicetextblender.yaml"]) == 0
    table = capsys.readouterr().out
    rows = {
        m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", "")))
        for m in re.finditer(r"^(\w+)\s+([\d,]+)\s+([\d,]+)$", table, re.MULTILINE)
    }
    for component, size in PAPER.items():
        trainable, total = rows[component]
        assert trainable == total and abs(total - size) / size < 0.15, (component, total)
    assert rows["llm"][0] == 0 and 2.3e9 < rows["llm"][1] < 2.7e9  # frozen Gemma-2B
