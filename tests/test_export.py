"""Export: reload gives identical generations; the LoRA folder loads in plain transformers + peft elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import lightning as L
import torch
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch

from lit_sllm.cli import main
from lit_sllm.models.adapters import ConformerAdapter
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.optim import OptimSpec

PLAIN_PEFT = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
ids = torch.tensor([[2, 8, 10, 13, 14, 20]])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, sys.argv[3])
assert not any(name.startswith("lit_sllm") for name in sys.modules)
"""


def _trained_checkpoint(llm_dir, whisper_dir, tmp_path):
    torch.manual_seed(0)
    module = JointSFT(
        llm=LLMSpec(str(llm_dir)),
        encoder=HFSpeechEncoder(str(whisper_dir)),
        adapter=partial(ConformerAdapter, d_model=16, num_heads=2, num_layers=1),
        lora=LoraSpec(r=4, alpha=8, dropout=0.0),
        optimizer=OptimSpec(lr=1e-2),
    )
    batch = make_batch(module.model, TRANSCRIPTS)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(module, BatchListDataModule([batch] * 4))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    return module.eval(), tmp_path / "run.ckpt"


def test_export_reload_and_plain_peft(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    module, ckpt = _trained_checkpoint(tiny_llm_dir, tiny_whisper_dir, tmp_path)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "export")]) == 0
    adapter_dir = tmp_path / "export" / "llm_adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4

    template = (tmp_path / "export" / "chat_template.jinja").read_text()
    assert template == module.model.formatter.template  # the template the model was trained with travels with it
    config = json.loads((tmp_path / "export" / "speech_llm.json").read_text())
    assert config["llm"]["chat_template"] == str(tmp_path / "export" / "chat_template.jinja")

    reloaded = SpeechLLM.from_pretrained(str(tmp_path / "export")).eval()
    assert reloaded.formatter.template == template
    prompts = make_batch(module.model, TRANSCRIPTS, prompt_only=True)
    assert reloaded.generate(prompts, max_new_tokens=5) == module.model.generate(prompts, max_new_tokens=5)

    out = tmp_path / "logits.pt"
    script = [sys.executable, "-c", PLAIN_PEFT, str(tiny_llm_dir), str(adapter_dir), str(out)]
    subprocess.run(script, check=True, cwd=tmp_path, capture_output=True)
    with torch.no_grad():
        expected = module.model.llm(input_ids=torch.tensor([[2, 8, 10, 13, 14, 20]])).logits
    torch.testing.assert_close(torch.load(out, weights_only=True), expected, rtol=0, atol=0)


def test_merged_export_gives_the_same_generations(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    module, ckpt = _trained_checkpoint(tiny_llm_dir, tiny_whisper_dir, tmp_path)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "merged"), "--merge-lora"]) == 0
    assert not (tmp_path / "merged" / "llm_adapter").exists()
    merged = SpeechLLM.from_pretrained(str(tmp_path / "merged")).eval()
    assert not merged.has_lora
    prompts = make_batch(module.model, TRANSCRIPTS, prompt_only=True)
    assert merged.generate(prompts, max_new_tokens=5) == module.model.generate(prompts, max_new_tokens=5)
