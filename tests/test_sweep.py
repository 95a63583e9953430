"""`lit-sllm sweep`: W&B sweep files expanded offline (grid, random, SLURM array)."""

from __future__ import annotations

import shlex

from lit_sllm.cli import main
from lit_sllm.tools.sweep import command_for, expand, load_sweep

GRID = """
program: lit-sllm
method: grid
command:
  - ${env}
  - ${program}
  - fit
  - --config
  - experiments/toy/joint_sft.yaml
  - ${args}
parameters:
  model.optimizer.lr: {values: [0.001, 0.0003]}
  model.adapter.stack: {values: [2, 4]}
  seed_everything: {value: 7}
"""

RANDOM = """
method: random
run_cap: 5
parameters:
  model.optimizer.lr: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-3}
  model.kd_weight: {distribution: uniform, min: 0.0, max: 1.0}
  model.adapter.stack: {values: [2, 4, 8]}
"""


def test_grid_of_two_by_two_gives_four_runs(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(GRID)
    assert main(["sweep", str(tmp_path / "grid.yaml"), "--dry-run"]) == 0
    lines = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    assert lines[0] == [
        "lit-sllm",
        "fit",
        "--config",
        "experiments/toy/joint_sft.yaml",
        "--model.optimizer.lr=0.001",
        "--model.adapter.stack=2",
        "--seed_everything=7",
    ]
    assert {(line[4], line[5]) for line in lines} == {
        (f"--model.optimizer.lr={lr}", f"--model.adapter.stack={k}") for lr in (0.001, 0.0003) for k in (2, 4)
    }


def test_random_sweep_is_seeded_and_within_bounds(tmp_path):
    (tmp_path / "random.yaml").write_text(RANDOM)
    sweep = load_sweep(tmp_path / "random.yaml")
    runs = expand(sweep, seed=3)
    assert len(runs) == 5 and runs == expand(sweep, seed=3) and runs != expand(sweep, seed=4)
    assert all(1e-5 <= r["model.optimizer.lr"] <= 1e-3 and 0 <= r["model.kd_weight"] <= 1 for r in runs)
    assert {r["model.adapter.stack"] for r in expand(sweep, count=60)} == {2, 4, 8}
    assert command_for(sweep, runs[0])[0] == "lit-sllm"


def test_slurm_dry_run_prints_an_array_job(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(GRID)
    assert main(["sweep", str(tmp_path / "grid.yaml"), "--slurm", "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-3" in script and script.count(" ;;") == 4
    assert "LIT_SLLM_RUN_NAME=grid-$SLURM_ARRAY_TASK_ID" in script


def test_shipped_sweeps_expand_into_runs_whose_overrides_resolve(monkeypatch, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    for path, expected in (("experiments/sweeps/toy_joint_sft.yaml", 8), ("experiments/sweeps/toy_mtbi.yaml", 12)):
        sweep = load_sweep(path)
        commands = [command_for(sweep, run) for run in expand(sweep)]
        assert len(commands) == expected
        # the first run's overrides are accepted by the CLI as they stand
        assert main([*commands[0][1:], "--print_config"]) == 0
    capsys.readouterr()


def test_overrides_are_added_to_every_run(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(GRID)
    argv = ["sweep", str(tmp_path / "grid.yaml"), "--dry-run", "--override", "trainer.max_steps=3"]
    assert main([*argv, "--override", "data.num_workers=0"]) == 0
    lines = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and all(line[-2:] == ["--trainer.max_steps=3", "--data.num_workers=0"] for line in lines)


def test_the_shipped_kd_sweep_trains_three_different_recipes(tmp_path, monkeypatch):
    """Each KD weight of experiments/sweeps/toy_mtbi.yaml changes what is trained (the teacher view is on), with the
    sweep's other parameters held at one drawn run."""
    import csv
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data_shards").symlink_to(root / "data_shards")
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(root / "experiments/sweeps/toy_mtbi.yaml")
    drawn = expand(sweep)[0]
    weights = sweep["parameters"]["model.kd_weight"]["values"]
    overlay = tmp_path / "short.yaml"
    overlay.write_text(SHORT_FIT.format(root=tmp_path / "out"))
    losses = {}
    for weight in weights:
        command = command_for(sweep, drawn | {"model.kd_weight": weight})
        command[command.index("experiments/toy/mtbi.yaml")] = str(root / "experiments/toy/mtbi.yaml")
        assert main([*command[1:], "--config", str(overlay), f"--trainer.logger.init_args.name=kd{weight}"]) == 0
        with open(next((tmp_path / "out" / f"kd{weight}").glob("version_*/metrics.csv"))) as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("train/mtbi/ce")]
        losses[weight] = [round(float(row["train/mtbi/ce"]), 6) for row in rows]
        kd_logged = [row.get("train/mtbi/kd") for row in rows]
        assert all(kd_logged) if weight > 0 else not any(kd_logged)
    assert len(weights) == 3 and len({tuple(series[1:]) for series in losses.values()}) == 3, losses


SHORT_FIT = """
data: {{init_args: {{num_workers: 0}}}}
trainer:
  max_steps: 4
  limit_val_batches: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}}}}}
  callbacks: []
"""
