"""Two-process CPU DDP (gloo) on the toy world: its models and shards, uneven validation shards per rank, no hang,
every sample validated exactly once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import TOY_WORLD, toy_samples, write_index, write_shard

CONFIG = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.joint_sft.JointSFT
  init_args:
    llm: {{name_or_path: {llm}}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {encoder}}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 4}}}}
    lora: {{r: 4, alpha: 8}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 1
    batches_per_epoch: 3
    train:
      asr: {{shards: {train}, weight: 0.8, batching: {{batch_size: 2}}}}
      text: {{shards: {text}, weight: 0.2, batching: {{batch_size: 2}}}}
    val:
      dev: {{shards: {dev}, batching: {{batch_size: 2}}}}
    eval:
      text: {{shards: {text_eval}, batching: {{batch_size: 2}}, max_samples: 5}}
      generalization:
        shards: {dev}
        max_samples: 3
        batching: {{batch_size: 8}}
        expand: {{class_path: lit_sllm.data.generalization.GeneralizationRequests, init_args: {{tasks: {tasks}}}}}
trainer:
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_steps: 3
  log_every_n_steps: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  default_root_dir: {root}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}}}}}
  callbacks:
    - {{class_path: model_helpers.KeyRecorder, init_args: {{folder: {root}}}}}
    - {{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {{dirpath: {root}/ckpt, save_last: true}}}}
    - {{class_path: lit_sllm.callbacks.forgetting.TextForgetting, init_args: {{sets: [text], max_new_tokens: 4}}}}
    - class_path: lit_sllm.callbacks.generalization.GeneralizationBenchmark
      init_args: {{max_new_tokens: 4, checker: lit_sllm.toy.checkers.spoken_task_checker}}
    - {{class_path: model_helpers.EvalKeyRecorder, init_args: {{folder: {root}}}}}
"""


def _uneven_dev_set(folder: Path) -> list[str]:
    """Toy ASR validation samples in three shards of 5, 2 and 4: rank 0 reads 9, rank 1 reads 2."""
    samples, layout = iter(toy_samples("asr/val", 11)), {}
    for shard, count in enumerate((5, 2, 4)):
        name = f"dev-{shard:06d}.tar"
        layout[name] = [next(samples) for _ in range(count)]
        write_shard(folder / name, layout[name])
    write_index(folder, layout)
    return [key for samples in layout.values() for key, _, _ in samples]


def _run(*args: str) -> None:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_sllm.cli", *args], env=env, capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _logged(folder: Path, prefix: str) -> dict[str, float]:
    with open(next(folder.rglob("metrics.csv"))) as handle:
        return {k: float(v) for row in csv.DictReader(handle) for k, v in row.items() if v and k.startswith(prefix)}


@pytest.mark.slow
def test_two_process_ddp_fit_validates_and_evaluates_every_sample_exactly_once(tmp_path):
    keys = _uneven_dev_set(tmp_path / "dev")
    root = tmp_path / "out"
    root.mkdir()
    config = tmp_path / "ddp.yaml"
    values = dict(train=TOY_WORLD / "asr" / "train", text=TOY_WORLD / "text" / "train", dev=tmp_path / "dev")
    values |= dict(text_eval=TOY_WORLD / "text_eval" / "val", tasks=TOY_WORLD / "tasks.yaml")
    models = dict(llm=TOY_WORLD / "models" / "llm", encoder=TOY_WORLD / "models" / "encoder")
    config.write_text(CONFIG.format(root=root, **models, **values))
    _run("fit", "--config", str(config))
    seen = [key for rank in (0, 1) for key in json.loads((root / f"val_keys.rank{rank}.json").read_text())]
    assert sorted(seen) == sorted(f"dev/{key}" for key in keys)  # every sample once: none missing, none twice
    per_rank = [len(json.loads((root / f"val_keys.rank{rank}.json").read_text())) for rank in (0, 1)]
    assert per_rank == [9, 2]
    with open(next(root.rglob("metrics.csv"))) as handle:
        counts = [float(r["val/dev/samples"]) for r in csv.DictReader(handle) if r.get("val/dev/samples")]
    assert counts == [len(keys)]  # the logged count is reduced across ranks

    # the callbacks' sets: each rank scores only its share, and the shares make the set
    scored = [json.loads((root / f"eval_keys.rank{rank}.json").read_text()) for rank in (0, 1)]
    text_keys = [scored[rank]["forgetting/text"] for rank in (0, 1)]
    assert len(text_keys[0]) == 3 and len(text_keys[1]) == 2 and not set(text_keys[0]) & set(text_keys[1])
    questions = [scored[rank]["generalization"] for rank in (0, 1)]
    utterances = [{key.split("/")[0] for key in share} for share in questions]
    assert utterances == [set(keys[0:3:2]), {keys[1]}]  # the first 3 utterances, strided over the two ranks
    assert _logged(root, "forgetting/text/samples")["forgetting/text/samples"] == 5

    # the same checkpoint evaluated on 2 processes and on 1 gives the same figures
    last = str(root / "ckpt" / "last.ckpt")
    tables = {}
    for devices in ("2", "1"):
        out = tmp_path / f"eval{devices}"
        strategy = "ddp" if devices == "2" else "auto"
        _run(
            "evaluate",
            "--config",
            str(config),
            "--ckpt_path",
            last,
            "--trainer.devices",
            devices,
            "--trainer.strategy",
            strategy,
            "--trainer.default_root_dir",
            str(out),
            "--trainer.logger.init_args.save_dir",
            str(out),
        )
        tables[devices] = (json.loads(next(out.rglob("generalization.json")).read_text()), _logged(out, "forgetting/"))
    (table_2, forgetting_2), (table_1, forgetting_1) = tables["2"], tables["1"]
    assert table_2 == table_1 and sum(entry["n"] for entry in table_1.values()) == len(questions[0] + questions[1])
    assert forgetting_2.keys() == forgetting_1.keys() and forgetting_1["forgetting/text/samples"] == 5
    for name, value in forgetting_1.items():
        assert forgetting_2[name] == pytest.approx(value, rel=1e-5), name
