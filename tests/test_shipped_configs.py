"""Every shipped experiment YAML resolves against the code, and its printed config loads back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_sllm.cli import main

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
