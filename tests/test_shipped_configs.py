"""Every shipped experiment YAML resolves against the code, and its printed config loads back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_sllm.cli import main
from lit_sllm.data.datamodule import SpeechTextDataModule
from lit_sllm.lightning_cli import LitSLLMCLI
from lit_sllm.modules.base import SpeechLLMModule

ROOT = Path(__file__).resolve().parents[1]
WITH_MODEL = sorted(
    p for p in (ROOT / "experiments").rglob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {})
)
EXPERIMENTS = [p for p in WITH_MODEL if "trainer" in yaml.safe_load(p.read_text())]
# overlays (a model section but no trainer) -> the experiment they compose on
OVERLAYS = {ROOT / "experiments/toy/joint_sft_augment.yaml": ROOT / "experiments/toy/joint_sft.yaml"}


@pytest.fixture(autouse=True)
def tiny_model_paths(monkeypatch, tiny_llm_dir, tiny_whisper_dir):
    """The configs' path variables point at tiny local models (print_config instantiates nothing anyway)."""
    monkeypatch.setenv("LIT_SLLM_LLM", str(tiny_llm_dir))
    monkeypatch.setenv("LIT_SLLM_ENCODER", str(tiny_whisper_dir))
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_resolves_and_round_trips(config, tmp_path, capsys, tiny_llm_dir):
    assert main(["fit", "--config", str(config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert main(["fit", "--config", str(tmp_path / "printed.yaml"), "--print_config"]) == 0
    assert capsys.readouterr().out == printed
    if "LIT_SLLM_LLM" in config.read_text():
        assert yaml.safe_load(printed)["model"]["init_args"]["llm"]["name_or_path"] == str(tiny_llm_dir)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(ROOT)))
def test_overlay_composes_on_its_experiment_and_round_trips(overlay, tmp_path, capsys):
    assert main(["fit", "--config", str(OVERLAYS[overlay]), "--print_config"]) == 0
    base = yaml.safe_load(capsys.readouterr().out)
    assert main(["fit", "--config", str(OVERLAYS[overlay]), "--config", str(overlay), "--print_config"]) == 0
    printed = capsys.readouterr().out
    composed = yaml.safe_load(printed)
    for key in ("train", "val", "test"):  # an overlay's dict replaces the base's: it must name every entry
        sets, base_sets = composed["data"]["init_args"][key], base["data"]["init_args"][key]
        assert {name: one["shards"] for name, one in sets.items()} == {n: o["shards"] for n, o in base_sets.items()}
    (tmp_path / "printed.yaml").write_text(printed)
    assert main(["fit", "--config", str(tmp_path / "printed.yaml"), "--print_config"]) == 0
    assert capsys.readouterr().out == printed


def test_every_config_with_a_model_is_checked():
    assert set(WITH_MODEL) == set(EXPERIMENTS) | set(OVERLAYS)


def test_there_are_shipped_configs():
    assert {"voicetextblender.yaml", "librispeech_mtbi.yaml"} <= {p.name for p in EXPERIMENTS}


# hardware the test machine has: the GPU configs' trainers are built on one CPU process; nothing else changes
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
ON_CPU += ["--trainer.precision=32-true"]


def instantiate(config: Path, *overrides: str) -> LitSLLMCLI:
    """The model, data module and trainer of a config, built as `lit-sllm fit` builds them (nothing runs)."""
    return LitSLLMCLI(args=["--config", str(config), *ON_CPU, *overrides], run=False)


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_instantiates(config, tmp_path, monkeypatch):
    (tmp_path / "data_shards").symlink_to(ROOT / "data_shards")  # the toy configs' relative paths, from tmp
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    monkeypatch.chdir(tmp_path)
    cli = instantiate(config)
    assert isinstance(cli.model, SpeechLLMModule) and isinstance(cli.datamodule, SpeechTextDataModule)
    shipped = yaml.safe_load(config.read_text())
    assert type(cli.model).__name__ == shipped["model"]["class_path"].rsplit(".", 1)[1]
    wanted = [c["class_path"].rsplit(".", 1)[1] for c in shipped["trainer"].get("callbacks", [])]
    assert set(wanted) <= {type(c).__name__ for c in cli.trainer.callbacks}
    assert cli.datamodule.sample_rate == cli.model.model.sample_rate  # linked from the encoder


@pytest.mark.parametrize(
    "edit, error",
    [
        (("ctc_head: data_shards/toy/models/encoder", "ctc_head: data_shards/toy/models/nowhere"), "ctc_head"),
        (("kd_weight: 1.0", "kd_wieght: 1.0"), "kd_wieght is not a config key"),
    ],
)
def test_a_broken_copy_of_a_shipped_config_fails_to_instantiate(edit, error, tmp_path, monkeypatch):
    (tmp_path / "data_shards").symlink_to(ROOT / "data_shards")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "experiments/toy/mtbi.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "broken.yaml").write_text(text.replace(*edit))
    with pytest.raises(Exception) as failure:
        instantiate(tmp_path / "broken.yaml")
    assert error in "".join(str(e) for e in (failure.value, failure.value.__cause__, failure.value.__context__))


TOY = sorted((ROOT / "experiments/toy").glob("*.yaml"))
SHORT = """
trainer:
  max_steps: 2
  val_check_interval: 2
  log_every_n_steps: 1
  limit_val_batches: 1
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: run}}}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("config", [p for p in TOY if p in EXPERIMENTS], ids=lambda p: p.name)
def test_toy_config_fits_two_steps_with_its_callbacks(config, tmp_path, monkeypatch):
    (tmp_path / "data_shards").symlink_to(ROOT / "data_shards")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.yaml").write_text(SHORT.format(root=tmp_path / "logs"))
    assert main(["fit", "--config", str(config), "--config", str(tmp_path / "short.yaml")]) == 0
    metrics = next((tmp_path / "logs" / "run").glob("version_*/metrics.csv")).read_text()
    assert "train/loss" in metrics and "val/" in metrics
