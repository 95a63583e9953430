"""The claims tables: runs grouped by recipe from their folder names, mean and standard deviation over seeds, the
last value of each metric across a run's fit and test logs, and verdicts that follow the numbers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lit_sllm.claims import main, markdown_table, mean_std, mtbi_scores, report, vtb_scores


def _csv_run(folder, rows: list[dict[str, float]]) -> None:
    folder.mkdir(parents=True)
    names = sorted({name for row in rows for name in row})
    lines = [",".join(["step", *names])]
    lines += [",".join([str(step), *(str(row.get(name, "")) for name in names)]) for step, row in enumerate(rows)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def _vtb_run(root, recipe: str, seed: int, drop: float, wer: float) -> None:
    fit = [
        {"forgetting/toy_text/accuracy_drop": 0.5, "forgetting/toy_text/ppl_ratio": 3.0},  # an earlier validation
        {"forgetting/toy_text/accuracy_drop": drop, "forgetting/toy_text/ppl_ratio": 1.0 + drop},
    ]
    _csv_run(root / f"{recipe}-s{seed}" / "fit", fit)
    _csv_run(root / f"{recipe}-s{seed}" / "test", [{"test/asr/wer": wer, "test/sqa/exact_match": 0.8}])


def _mtbi_run(root, recipe: str, seed: int, unseen_task: float) -> None:
    folder = root / f"{recipe}-s{seed}"
    _csv_run(folder / "test", [{"test/asr/wer": 0.05 + seed / 100}])
    table = {
        "seen": {"accuracy": 0.9, "rougeL": 0.9},
        "unseen_prompt": {"accuracy": unseen_task + 0.1, "rougeL": 0.8},
        "unseen_task": {"accuracy": unseen_task, "rougeL": 0.7},
    }
    (folder / "generalization.json").write_text(json.dumps(table))


@pytest.fixture
def claim_runs(tmp_path):
    for seed, (joint, speech) in enumerate([(0.0, 0.3), (0.1, 0.5), (0.2, 0.4)]):
        _vtb_run(tmp_path, "joint_sft", seed, drop=joint, wer=0.1)
        _vtb_run(tmp_path, "speech_only_sft", seed, drop=speech, wer=0.1)
        _mtbi_run(tmp_path, "mtbi", seed, unseen_task=0.6)
        _mtbi_run(tmp_path, "asr_only", seed, unseen_task=0.2)
        _mtbi_run(tmp_path, "mtbi_no_interleave", seed, unseen_task=0.7)
    (tmp_path / "notes").mkdir()  # not a run: ignored
    (tmp_path / "joint_sft-s0.log").write_text("the fit's output\n")  # claims.sh logs beside the run folders
    return tmp_path


def test_scores_take_each_runs_last_value_across_fit_and_test_logs(claim_runs):
    vtb = vtb_scores(claim_runs)
    assert vtb["joint_sft"]["text accuracy drop"] == [0.0, 0.1, 0.2]
    assert vtb["speech_only_sft"]["text ppl ratio"] == pytest.approx([1.3, 1.5, 1.4])
    assert vtb["joint_sft"]["ASR WER"] == [0.1] * 3 and vtb["joint_sft"]["spoken QA exact match"] == [0.8] * 3
    assert mtbi_scores(claim_runs)["asr_only"]["unseen prompt: accuracy"] == pytest.approx([0.3] * 3)
    assert mtbi_scores(claim_runs)["asr_only"]["ASR WER"] == pytest.approx([0.05, 0.06, 0.07])  # the test log


def test_mean_std_and_tables():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([1.0, math.nan]))
    table = markdown_table({"a": {"x": [1.0, 3.0]}, "b": {"x": [math.nan]}}, ("b", "a", "c"))
    assert table.splitlines() == [
        "| recipe | seeds | x |",
        "|---|---|---|",
        "| b | 1 | missing |",
        "| a | 2 | 2.000 ± 1.414 |",
    ]


def test_verdicts_follow_the_numbers_and_main_writes_the_report(claim_runs, capsys):
    verdicts = report(claim_runs)["verdicts"]
    forgetting = verdicts["joint SFT forgets less text skill than speech-only SFT"]
    assert forgetting["verdict"] == "reproduced" and forgetting["difference"] == pytest.approx(0.3)  # 0.1 vs 0.4
    assert forgetting["interval"][0] > 0 and forgetting["matched_speech_quality"]["matched"]  # WER 0.1 for both
    assert verdicts["MTBI beats ASR-only on unseen prompts"]["verdict"] == "reproduced"  # 0.7 vs 0.3 on every seed
    assert verdicts["interleaving helps (unseen task accuracy)"]["verdict"] == "not reproduced"  # 0.6 vs 0.7
    assert main([str(claim_runs)]) == 0
    printed = capsys.readouterr().out
    assert "| joint_sft | 3 | 0.100 ± 0.000 | 0.800 ± 0.000 | 0.100 ± 0.100 | 1.100 ± 0.100 |" in printed
    assert "- joint SFT forgets less text skill than speech-only SFT: reproduced (difference +0.300" in printed
    assert json.loads((claim_runs / "claims.json").read_text())["verdicts"] == json.loads(json.dumps(verdicts))
    assert main([str(claim_runs / "absent")]) == 1


def test_bootstrap_verdicts_on_noisy_seeds():
    from lit_sllm.claims import CLAIMS, bootstrap_interval, judge

    difference, low, high = bootstrap_interval([0.6, 0.7, 0.65, 0.62, 0.68], [0.2, 0.3, 0.25, 0.22, 0.28])
    assert difference == pytest.approx(0.4) and 0.3 < low < difference < high < 0.5
    interleaving = CLAIMS[3]
    overlapping = {"mtbi": {interleaving.column: [0.5, 0.6, 0.4, 0.55, 0.45]},
                   "mtbi_no_interleave": {interleaving.column: [0.52, 0.58, 0.42, 0.5, 0.47]}}  # fmt: skip
    judged = judge(interleaving, overlapping)
    assert judged["verdict"] == "not reproduced" and judged["interval"][0] < 0 < judged["interval"][1]
    lower_is_better = judge(CLAIMS[0], {"joint_sft": {CLAIMS[0].column: [0.01, 0.0, 0.02]},
                                        "speech_only_sft": {CLAIMS[0].column: [0.2, 0.25, 0.3]}})  # fmt: skip
    assert lower_is_better["verdict"] == "reproduced" and lower_is_better["difference"] > 0
    assert judge(CLAIMS[1], {"mtbi": {CLAIMS[1].column: [0.5]}})["verdict"] == "not measurable"
    zeros = judge(CLAIMS[2], {"mtbi": {CLAIMS[2].column: [0.0, 0.0]}, "asr_only": {CLAIMS[2].column: [0.0, 0.0]}})
    assert zeros == {"verdict": "not measurable", "why": "both recipes score 0 on every seed"}


def test_claims_notebook_prints_the_tables_and_plots(claim_runs, monkeypatch):
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("LIT_SLLM_CLAIMS", str(claim_runs))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(repo / "notebooks" / "claims.ipynb", as_version=4)
    NotebookClient(notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(repo)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "| speech_only_sft | 3 |" in text and "| mtbi_no_interleave | 3 |" in text
    assert "interleaving helps (unseen task accuracy): not reproduced" in text
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2
