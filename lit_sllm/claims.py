"""The papers' claims on the toy world: tables, with mean and standard deviation over seeds, from run folders.

`experiments/toy/claims.sh` trains every recipe with several seeds into `<root>/<recipe>-s<seed>/` (the run name
sets the folder: `LIT_SLLM_RUN_NAME`), then calls `python -m lit_sllm.claims <root>`.

- VoiceTextBlender: joint SFT (15% text-only batches) against speech-only SFT with the same LoRA: speech-task
  quality (`test/*` of `lit-sllm test`) and text-only forgetting (`forgetting/*` at the last validation).
- MTBI: the MTBI connector against one trained on ASR only, and without interleaving, on the generalisation
  benchmark (`generalization.json` of each run).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_sllm.analysis import find_runs, load_run

VTB_RECIPES = ("joint_sft", "speech_only_sft")
MTBI_RECIPES = ("mtbi", "mtbi_clip_interleave", "mtbi_no_interleave", "asr_only")
# column -> logged metric (last value of the run)
VTB_COLUMNS = {
    "ASR WER": "test/asr/wer",
    "spoken QA exact match": "test/sqa/exact_match",
    "text accuracy drop": "forgetting/toy_text/accuracy_drop",
    "text ppl ratio": "forgetting/toy_text/ppl_ratio",
}
# column -> (benchmark category, score)
MTBI_COLUMNS = {
    "seen: accuracy": ("seen", "accuracy"),
    "unseen prompt: accuracy": ("unseen_prompt", "accuracy"),
    "unseen task: accuracy": ("unseen_task", "accuracy"),
    "unseen prompt: ROUGE-L": ("unseen_prompt", "rougeL"),
    "unseen task: ROUGE-L": ("unseen_task", "rougeL"),
}
RUN_NAME = re.compile(r"^(?P<recipe>[a-z_]+)-s(?P<seed>\d+)$")
Scores = dict[str, dict[str, list[float]]]  # recipe -> column -> one value per seed


def _runs(root: Path) -> dict[str, list[Path]]:
    """Run folders directly under `root`, grouped by recipe, from their `<recipe>-s<seed>` names."""
    runs: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        match = RUN_NAME.match(folder.name)
        if match:
            runs[match["recipe"]].append(folder)
    return runs


def _last_metrics(folder: Path) -> dict[str, float]:
    """The last value of every metric of every log (fit and test) under a run folder."""
    values: dict[str, float] = {}
    for log_folder in find_runs(folder):
        run, _ = load_run(log_folder)
        values |= {name: series[1][-1] for name, series in run.items() if series[1]}
    return values


def _scores(root: str | Path, recipes: tuple[str, ...], columns_of: Callable[[Path], dict[str, float]]) -> Scores:
    """recipe -> column -> one value per seed, for the runs of `recipes` under `root`."""
    scores: Scores = {}
    for recipe, folders in _runs(Path(root)).items():
        if recipe in recipes:
            rows = [columns_of(folder) for folder in folders]
            scores[recipe] = {column: [row[column] for row in rows] for column in rows[0]}
    return scores


def _vtb_columns(folder: Path) -> dict[str, float]:
    metrics = _last_metrics(folder)  # a missing metric is NaN, reported as "missing", not averaged away
    return {column: metrics.get(name, math.nan) for column, name in VTB_COLUMNS.items()}


def _mtbi_columns(folder: Path) -> dict[str, float]:
    table = _generalization(folder)
    columns = {
        column: table.get(category, {}).get(score, math.nan) for column, (category, score) in MTBI_COLUMNS.items()
    }
    # the speech quality every MTBI recipe reaches (a fair ASR-only baseline transcribes well)
    return columns | {"ASR WER": _last_metrics(folder).get(VTB_COLUMNS["ASR WER"], math.nan)}


def vtb_scores(root: str | Path) -> Scores:
    """VoiceTextBlender columns per recipe, from each run's fit and test logs."""
    return _scores(root, VTB_RECIPES, _vtb_columns)


def mtbi_scores(root: str | Path) -> Scores:
    """Generalisation-benchmark columns per recipe, from each run's `generalization.json`."""
    return _scores(root, MTBI_RECIPES, _mtbi_columns)


def _generalization(folder: Path) -> dict[str, dict[str, float]]:
    found = sorted(folder.rglob("generalization.json"))
    if not found:
        raise FileNotFoundError(f"{folder} has no generalization.json: did its fit finish? Rerun claims.sh.")
    return json.loads(found[-1].read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN when a value is missing."""
    if any(math.isnan(v) for v in values) or not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(scores: Scores, order: tuple[str, ...]) -> str:
    """One row per recipe (in `order`), `mean ± std (n seeds)` per column."""
    recipes = [recipe for recipe in order if recipe in scores]
    if not recipes:
        return "(no runs)"
    columns = list(scores[recipes[0]])
    lines = ["| recipe | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for recipe in recipes:
        cells = [_cell(*mean_std(scores[recipe][column])) for column in columns]
        lines.append(f"| {recipe} | {len(scores[recipe][columns[0]])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(mean: float, std: float) -> str:
    return "missing" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a comparison of two recipes on one column: `better` beats `than` on it."""

    name: str
    table: str  # "vtb" or "mtbi"
    column: str
    better: str
    than: str
    higher_is_better: bool = True


CLAIMS = (
    Claim("joint SFT forgets less text skill than speech-only SFT", "vtb", "text accuracy drop", "joint_sft",
          "speech_only_sft", higher_is_better=False),
    Claim("MTBI beats ASR-only on unseen prompts", "mtbi", "unseen prompt: accuracy", "mtbi", "asr_only"),
    Claim("MTBI beats ASR-only on unseen tasks", "mtbi", "unseen task: accuracy", "mtbi", "asr_only"),
    Claim("interleaving helps (unseen task accuracy)", "mtbi", "unseen task: accuracy", "mtbi", "mtbi_no_interleave"),
    Claim("frame-level interleaving beats clip-level (unseen task accuracy)", "mtbi", "unseen task: accuracy", "mtbi",
          "mtbi_clip_interleave"),
)  # fmt: skip
MATCHED_QUALITY_COLUMN = "ASR WER"  # the forgetting claim holds "at matched speech quality"


def bootstrap_interval(
    a: list[float], b: list[float], level: float = 0.95, rounds: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its percentile bootstrap interval (each group resampled with replacement)."""
    rng = random.Random(seed)
    draws = sorted(
        statistics.fmean(rng.choices(a, k=len(a))) - statistics.fmean(rng.choices(b, k=len(b))) for _ in range(rounds)
    )
    tail = (1 - level) / 2
    low, high = draws[int(tail * rounds)], draws[min(rounds - 1, int((1 - tail) * rounds))]
    return statistics.fmean(a) - statistics.fmean(b), low, high


def judge(claim: Claim, scores: Scores) -> dict[str, Any]:
    """The claim's difference (in its favour: positive supports it), 95 % bootstrap interval and verdict:
    "reproduced" when the interval lies above 0, "not reproduced" otherwise, "not measurable" (with why) when a
    recipe is missing, has fewer than 2 seeds, or both recipes score one constant on every seed."""
    rows = [scores.get(claim.better, {}).get(claim.column), scores.get(claim.than, {}).get(claim.column)]
    missing = [recipe for recipe, row in zip((claim.better, claim.than), rows) if not row or any(map(math.isnan, row))]
    if missing:
        return {"verdict": "not measurable", "why": f"no complete runs of {', '.join(missing)}"}
    better, than = rows
    if min(len(better), len(than)) < 2:
        return {"verdict": "not measurable", "why": "fewer than 2 seeds: no interval"}
    if len(set(better) | set(than)) == 1:
        return {"verdict": "not measurable", "why": f"both recipes score {better[0]:g} on every seed"}
    sign = 1.0 if claim.higher_is_better else -1.0
    difference, low, high = bootstrap_interval([sign * v for v in better], [sign * v for v in than])
    verdict = "reproduced" if low > 0 else "not reproduced"
    why = f"difference {difference:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}] over {len(better)}+{len(than)} seeds"
    return {"verdict": verdict, "why": why, "difference": difference, "interval": [low, high]}


def matched_quality(vtb: Scores) -> dict[str, Any] | None:
    """The ASR WER difference of the two VoiceTextBlender recipes: "matched" when its interval contains 0."""
    a, b = (vtb.get(recipe, {}).get(MATCHED_QUALITY_COLUMN) for recipe in VTB_RECIPES)
    if not a or not b or any(math.isnan(v) for v in a + b) or min(len(a), len(b)) < 2:
        return None
    difference, low, high = bootstrap_interval(a, b)
    return {"difference": difference, "interval": [low, high], "matched": low <= 0 <= high}


def verdicts(vtb: Scores, mtbi: Scores) -> dict[str, dict[str, Any]]:
    """Every claim judged (`judge`); the forgetting claim also says whether speech quality matched."""
    tables = {"vtb": vtb, "mtbi": mtbi}
    judged = {claim.name: judge(claim, tables[claim.table]) for claim in CLAIMS}
    judged[CLAIMS[0].name]["matched_speech_quality"] = matched_quality(vtb)
    return judged


def report(root: str | Path) -> dict[str, Any]:
    """Both tables (markdown), the raw scores and the verdicts of the runs under `root`."""
    vtb, mtbi = vtb_scores(root), mtbi_scores(root)
    return {
        "vtb_table": markdown_table(vtb, VTB_RECIPES),
        "mtbi_table": markdown_table(mtbi, MTBI_RECIPES),
        "vtb": vtb,
        "mtbi": mtbi,
        "verdicts": verdicts(vtb, mtbi),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_sllm.claims", description=__doc__)
    parser.add_argument("root", help="the folder of <recipe>-s<seed> runs (e.g. runs/toy/claims)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"{root} is not a folder of claim runs: run experiments/toy/claims.sh first.", file=sys.stderr)
        return 1
    result = report(root)
    (root / "claims.json").write_text(json.dumps(result, indent=2) + "\n")
    print("VoiceTextBlender: joint SFT vs speech-only SFT\n\n" + result["vtb_table"])
    print("\nMTBI: generalisation benchmark\n\n" + result["mtbi_table"] + "\n")
    for claim, judged in result["verdicts"].items():
        print(f"- {claim}: {judged['verdict']} ({judged['why']})")
        quality = judged.get("matched_speech_quality")
        if quality:
            low, high = quality["interval"]
            state = "matched" if quality["matched"] else "NOT matched"
            print(
                f"  speech quality {state}: ASR WER difference {quality['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
