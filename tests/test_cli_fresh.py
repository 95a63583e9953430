"""The CLI as a user types it: every command in a fresh `lit-sllm` process with nothing imported beforehand, on the
toy world, for both recipes: fit -> test -> predict -> export -> plain transformers + peft, and a resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_helpers import TOY_WORLD

LIT_SLLM = [str(Path(sys.executable).with_name("lit-sllm"))]
if not Path(LIT_SLLM[0]).exists():
    LIT_SLLM = [sys.executable, "-m", "lit_sllm.cli"]
ENV = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}

SOURCES = {
    "lit_sllm.modules.joint_sft.JointSFT": """
    train:
      asr: {{shards: {world}/asr/train, weight: 0.7, batching: {{batch_size: 4}}}}
      text: {{shards: {world}/text/train, weight: 0.3, batching: {{batch_size: 4}}}}""",
    "lit_sllm.modules.mtbi.MTBI": """
    train:
      mtbi:
        shards: {world}/asr/train
        batching: {{batch_size: 4}}
        transform: {{class_path: lit_sllm.data.mtbi.BehaviourImitation, init_args: {{interleave_prob: 0.5}}}}""",
}
CONFIG = """
seed_everything: 0
model:
  class_path: {recipe}
  init_args:
    llm: {{name_or_path: {world}/models/llm}}
    encoder:
      class_path: lit_sllm.models.encoders.HFSpeechEncoder
      init_args: {{name_or_path: {world}/models/encoder}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 8}}}}
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    trainable: {{encoder: false, adapter: true, llm: false, lora: true}}
    optimizer: {{lr: 0.003}}
    generation: {{max_new_tokens: 6}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 0
    batches_per_epoch: 4{sources}
    val:
      asr: {{shards: {world}/asr/val, batching: {{batch_size: 8}}}}
    test:
      asr: {{shards: {world}/asr/test, batching: {{batch_size: 8}}}}
    predict:
      asr: {{shards: {world}/asr/test, batching: {{batch_size: 8}}}}
    eval:
      generalization:
        shards: {world}/asr/test
        max_samples: 2
        batching: {{batch_size: 16}}
        expand:
          class_path: lit_sllm.data.generalization.GeneralizationRequests
          init_args: {{tasks: {world}/tasks.yaml}}
trainer:
  accelerator: cpu
  max_steps: 3
  val_check_interval: 2
  limit_val_batches: 1
  limit_test_batches: 1
  limit_predict_batches: 1
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: run}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, save_last: true}}
    - class_path: lit_sllm.callbacks.predictions.PredictionWriter
      init_args: {{output: {root}/predict.jsonl}}
    - class_path: lit_sllm.callbacks.generalization.GeneralizationBenchmark
      init_args: {{set: generalization, max_new_tokens: 4, checker: lit_sllm.toy.checkers.spoken_task_checker}}
"""
PLAIN_PEFT = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), sys.argv[2]).eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.tensor([[2, 4, 20, 21, 22, 7]])).logits, sys.argv[3])
assert not any(name.startswith("lit_sllm") for name in sys.modules), "lit_sllm was imported"
"""
FROM_PRETRAINED = """
import sys, torch
from lit_sllm.models.speech_llm import SpeechLLM
model = SpeechLLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model.llm(input_ids=torch.tensor([[2, 4, 20, 21, 22, 7]])).logits, sys.argv[2])
"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LIT_SLLM, *args], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=600)


def python(script: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SOURCES))
def test_fit_test_predict_export_and_load_in_fresh_processes(recipe, tmp_path):
    root = tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(
        CONFIG.format(recipe=recipe, world=TOY_WORLD, root=root, sources=SOURCES[recipe].format(world=TOY_WORLD))
    )

    fit = ok(cli("fit", "--config", str(config)))
    last = root / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 3  # max_steps fell between validations (2 and 4): the final state is saved
    assert f"last checkpoint  {last}" in fit.stdout and "run folder" in fit.stdout  # the run summary

    test = ok(cli("test", "--config", str(config), "--ckpt_path", str(last)))
    assert "Found keys that are in the model state dict" not in test.stderr
    assert "frozen" in test.stderr and "kept from pretrained paths" in test.stderr  # one line instead
    predictions = list(root.glob("run/version_*/predictions/test_asr.jsonl"))
    assert len(predictions) == 1 and len(predictions[0].read_text().splitlines()) == 8

    # the benchmark on the checkpoint, as a command, gives the very table the end of the fit printed
    (fit_table,) = [json.loads(p.read_text()) for p in root.glob("run/version_*/generalization.json")]
    evaluate = ok(cli("evaluate", "--config", str(config), "--ckpt_path", str(last)))
    assert "Generalisation benchmark" in evaluate.stderr + evaluate.stdout
    tables = [json.loads(p.read_text()) for p in sorted(root.glob("run/version_*/generalization.json"))]
    assert len(tables) == 2 and tables[0] == tables[1] == fit_table and fit_table["seen"]["n"] > 0

    ok(cli("predict", "--config", str(config), "--ckpt_path", str(last)))
    answers = [json.loads(line) for line in (root / "predict.jsonl").read_text().splitlines()]
    assert len(answers) == 8 and all(isinstance(row["answer"], str) for row in answers)

    resumed = ok(cli("fit", "--config", str(config), "--trainer.max_steps", "5", "--ckpt_path", str(last)))
    assert "not resumable" not in resumed.stderr  # the loader restores its stream position, and says so
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 5

    export = tmp_path / "export"
    ok(cli("export", "--ckpt", str(last), "--out", str(export)))
    plain, ours = tmp_path / "plain.pt", tmp_path / "ours.pt"
    python(PLAIN_PEFT, str(TOY_WORLD / "models" / "llm"), str(export / "llm_adapter"), str(plain))
    python(FROM_PRETRAINED, str(export), str(ours))
    torch.testing.assert_close(torch.load(plain, weights_only=True), torch.load(ours, weights_only=True))
    lora = {k: v for k, v in state["state_dict"].items() if "lora_" in k}
    assert lora and not all(torch.equal(v, torch.zeros_like(v)) for k, v in lora.items() if "lora_B" in k)


@pytest.mark.slow
def test_export_refuses_a_checkpoint_naming_a_class_outside_the_recipes(tmp_path):
    checkpoint = {"hyper_parameters": {"_class_path": "evil_module.Recipe"}, "state_dict": {}}
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    (tmp_path / "evil_module.py").write_text("open('pwned', 'w').write('x')\n")
    done = cli("export", "--ckpt", str(tmp_path / "tampered.ckpt"), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "pwned").exists()
    assert "outside lit_sllm.modules" in done.stderr and "--recipe-module evil_module" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            ["--model.init_args.llm.name_or_path", "/nonexistent/llm"],
            "model.init_args.llm.name_or_path: cannot load the tokenizer from '/nonexistent/llm': no such file",
        ),
        (
            ["--model.init_args.llm.name_or_path", "some-org/some-llm"],
            "no model hub is reachable",
        ),
        (
            ["--model.init_args.encoder.init_args.name_or_path", "./missing-encoder"],
            "model.init_args.encoder.init_args.name_or_path: cannot load the speech encoder from './missing-encoder'",
        ),
        (
            ["--model.init_args.optimzer.lr", "0.1"],
            "model.init_args.optimzer.lr is not a config key; did you mean model.init_args.optimizer.lr",
        ),
        (
            ["--model.init_args.schedule.decay", "cosin"],
            "model.init_args.schedule.decay must be one of 'cosine', 'constant'; got 'cosin'",
        ),
        (["--data.init_args.sample_rate", "8000"], "data.init_args.sample_rate is 8000 but follows from the encoder"),
        (["--trainer.max_stpes", "3"], "trainer.max_stpes is not a config key; did you mean trainer.max_steps"),
        (
            ["teacher_view: true", "teacher_view: false"],
            "model.init_args.kd_weight is 1.0 but data.train.mtbi.transform gives no teacher, so the KD term",
        ),
        (
            ["shards: data_shards/toy/asr/train", "shards: /nowhere/shard-*.tar"],
            "data.train.mtbi.shards: No shards match",
        ),
    ],
)
def test_common_mistakes_end_in_a_short_message_naming_the_key(override, expected, tmp_path):
    (tmp_path / "data_shards").symlink_to(Path("data_shards").resolve())  # run folders land in tmp, not the repo
    config = Path("experiments/toy/mtbi.yaml").resolve()
    if not override[0].startswith("--"):  # a YAML edit rather than a command-line override
        config = tmp_path / "edited.yaml"
        config.write_text(Path("experiments/toy/mtbi.yaml").read_text().replace(*override))
        override = []
    done = cli("fit", "--config", str(config), "--trainer.max_steps", "1", *override, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("lit-sllm fit: ") and expected in message
    assert "Traceback" not in done.stderr and "Given value" not in done.stderr


def test_help_imports_no_heavy_module():
    """`lit-sllm --help` and every `lit-sllm TOOL --help` parse without importing torch (their speed is measured
    by `lit-sllm bench startup`, not here)."""
    script = (
        "import sys\n"
        "from lit_sllm.cli import TOOLS, help_text, tool_parser\n"
        "help_text()\n"
        "for name in TOOLS:\n"
        "    tool_parser((name,))\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    python(script)
    assert ok(cli("--help")).stdout.startswith("usage: lit-sllm COMMAND")
    assert ok(cli("export", "--help")).stdout.count("--recipe-module") >= 1
    done = cli("nonsense")
    assert done.returncode == 2 and "unknown command 'nonsense'" in done.stderr


def test_the_lock_fits_setup_cfg_and_a_changed_requirement_is_caught(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock", Path("requirements") / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    recorded = next(line for line in lock.LOCK.read_text().splitlines() if line.startswith(lock.DIGEST_LINE))
    assert recorded.endswith(lock.requirements_digest()), "setup.cfg changed without `make lock`"
    assert {"torch", "torchaudio"} <= set(lock.pins(lock.LOCK.read_text().splitlines()))

    for name in ("setup.cfg", "requirements/tools.in", "requirements/lock.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(name, tmp_path / name)
    monkeypatch.setattr(lock, "SETUP", tmp_path / "setup.cfg")
    monkeypatch.setattr(lock, "TOOLS", tmp_path / "requirements" / "tools.in")
    monkeypatch.setattr(lock, "LOCK", tmp_path / "requirements" / "lock.txt")
    unchanged = lock.requirements_digest()
    text = (tmp_path / "setup.cfg").read_text()
    (tmp_path / "setup.cfg").write_text(text.replace("description = ", "description = Edited: "))
    assert lock.requirements_digest() == unchanged  # prose edits need no re-lock
    (tmp_path / "setup.cfg").write_text(text.replace("    rich>=13\n", "    rich>=13\n    numpy>=2\n"))
    assert lock.requirements_digest() != unchanged
    assert lock.check(exact=False) == 1


@pytest.mark.slow
def test_stored_teacher_distributions_train_mtbi_in_fresh_processes(tmp_path):
    """`lit-sllm teacher --topk` adds the teacher's distributions to answered shards, and an MTBI fit distils from
    them (`teacher_logits: true`) with no teacher view."""
    shard, stored = TOY_WORLD / "asr" / "train" / "asr-train-000000.tar", tmp_path / "stored"
    llm, tasks = TOY_WORLD / "models" / "llm", TOY_WORLD / "tasks.yaml"
    args = ["--shards", str(shard), "--out", str(stored), "--llm", str(llm), "--tasks", str(tasks)]
    ok(
        cli(
            "teacher",
            *args,
            "--topk",
            "8",
            "--asr-prompt",
            "Transcribe the audio.",
            "--keep-answers",
            "--batch-size",
            "64",
        )
    )
    index = json.loads((stored / "index.json").read_text())
    assert index["samples"] > 100 and index["teacher"]["topk"] == 8
    source = f"""
    train:
      mtbi:
        shards: {stored}
        batching: {{batch_size: 4}}
        transform:
          class_path: lit_sllm.data.mtbi.BehaviourImitation
          init_args: {{asr_prob: 0.5, interleave_prob: 0.5, teacher_logits: true}}"""
    config = tmp_path / "run.yaml"
    root = tmp_path / "out"
    config.write_text(CONFIG.format(recipe="lit_sllm.modules.mtbi.MTBI", world=TOY_WORLD, root=root, sources=source))
    ok(cli("fit", "--config", str(config), "--model.init_args.kd_weight", "1.0", "--trainer.callbacks", "[]"))
    (metrics,) = root.glob("run/version_*/metrics.csv")
    header, *rows = [line.split(",") for line in metrics.read_text().splitlines()]
    kd = [float(row[header.index("train/mtbi/kd")]) for row in rows if row[header.index("train/mtbi/kd")]]
    assert len(kd) == 3 and all(0 < value < 50 for value in kd)
