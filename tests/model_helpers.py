"""Builders of tiny SpeechLLMs and hand-made batches shared by the model tests."""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lit_sllm.data.batch import Batch
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.freezing import Trainable
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.models.speech_llm import SpeechLLM

TRANSCRIPTS = ["the red cat", "a blue dog", "two green box", "what colour is the ball"]


def tiny_speech_llm(llm_dir: Path, encoder_dir: Path, lora: bool = True, seed: int = 0, **trainable) -> SpeechLLM:
    torch.manual_seed(seed)
    return SpeechLLM(
        LLMSpec(str(llm_dir)),
        HFSpeechEncoder(str(encoder_dir)),
        partial(FrameStackMLP, stack=2),
        LoraSpec(r=4, alpha=8, dropout=0.0) if lora else None,
        Trainable(**trainable) if trainable else None,
    )


def asr_turns(transcript: str) -> list[dict]:
    return [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": "transcribe"}]},
        {"role": "assistant", "parts": [{"text": transcript}]},
    ]


def _clip(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    length = int(torch.randint(4800, 9600, (1,), generator=generator))
    return torch.randn(length, generator=generator) * 0.1


def make_batch(model: SpeechLLM, transcripts: list[str], seed: int = 0, prompt_only: bool = False) -> Batch:
    """A right-padded ASR batch with one random clip (0.3-0.6 s) per row."""
    formatter = ChatFormatter(model.tokenizer)
    encoded = [
        formatter.encode_prompt(asr_turns(t))[0] if prompt_only else formatter.encode(asr_turns(t)) for t in transcripts
    ]
    width = max(len(e.input_ids) for e in encoded)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded])
    labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in encoded])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded])
    clips = [_clip(seed + i) for i in range(len(transcripts))]  # each row's clip depends on its own seed only
    lengths = torch.tensor([len(c) for c in clips])
    audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        audio=audio,
        audio_lengths=lengths,
        source="asr",
        keys=[f"utt{i}" for i in range(len(transcripts))],
        tasks=["asr"] * len(transcripts),
        references=list(transcripts),
    )


class BatchListDataModule(L.LightningDataModule):
    """Serves fixed, pre-built batches: for module tests that need a Trainer but not the data layer; named eval sets
    (`data.eval`) come from `eval_data`, a real `SpeechTextDataModule`, when given."""

    def __init__(self, train: list[Batch], val: list[Batch] | None = None, eval_data=None) -> None:
        super().__init__()
        self.train, self.val = train, val or []
        self.sample_rate = 16000
        self.eval_data = eval_data

    def require_eval_set(self, name: str, key: str) -> None:
        self.eval_data.require_eval_set(name, key)

    def eval_dataloader(self, name: str):
        self.eval_data.trainer = self.trainer
        return self.eval_data.eval_dataloader(name)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=None, shuffle=False)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=None, shuffle=False)


class KeyRecorder(L.Callback):
    """Writes the sample keys each rank validated to `<folder>/val_keys.rank<r>.json` (for exactly-once checks)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.keys: list[str] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.keys += [f"{batch.source}/{key}" for key in batch.keys]

    def on_validation_epoch_end(self, trainer, pl_module):
        import json
        from pathlib import Path

        if not trainer.sanity_checking:
            path = Path(self.folder) / f"val_keys.rank{trainer.global_rank}.json"
            path.write_text(json.dumps(self.keys))
        self.keys = []


class StepLog(L.Callback):
    """Appends one JSON line per training step to `<folder>/steps.rank<r>.jsonl`: the step, the batch's sample keys and
    loss, and where it ran (SLURM node, restart count). For no-batch-twice, none-skipped and same-loss checks.

    With `LIT_SLLM_TEST_HOLD_AT=<step>` in the environment, a job's first run (SLURM restart 0) waits at the end of that
    step, for at most `hold_s`, until the requeue signal has arrived: the signal then lands at a known step.
    """

    def __init__(self, folder: str, hold_s: float = 150.0) -> None:
        self.folder, self.hold_s = folder, hold_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        record = {
            "step": trainer.global_step, "keys": list(batch.keys), "source": batch.source, "loss": float(loss),
            "restart": restart, "node": os.environ.get("SLURMD_NODENAME"), "rank": trainer.global_rank,
            "world_size": trainer.world_size,
        }  # fmt: skip
        with open(Path(self.folder) / f"steps.rank{trainer.global_rank}.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        if restart == 0 and str(trainer.global_step) == os.environ.get("LIT_SLLM_TEST_HOLD_AT"):
            deadline = time.monotonic() + self.hold_s
            while time.monotonic() < deadline and not any(getattr(c, "pending", False) for c in trainer.callbacks):
                time.sleep(0.1)


class EvalKeyRecorder(L.Callback):
    """Writes the keys this rank scored in the forgetting sets and the generalisation benchmark at fit end, to
    `<folder>/eval_keys.rank<r>.json` (for each-rank-its-share checks)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module):
        from lit_sllm.callbacks.forgetting import TextForgetting
        from lit_sllm.callbacks.generalization import GeneralizationBenchmark

        keys = {}
        for callback in trainer.callbacks:
            if isinstance(callback, TextForgetting):
                keys |= {f"forgetting/{name}": sorted(score.log_probs) for name, score in callback.last.items()}
            if isinstance(callback, GeneralizationBenchmark):
                keys["generalization"] = callback.local_keys
        path = Path(self.folder) / f"eval_keys.rank{trainer.global_rank}.json"
        path.write_text(json.dumps(keys))
