"""Captured tests/golden/fallback_encodings.json with the prefix-by-prefix ChatFormatter of commit 2634765 (its
`lit_sllm` first on the path, run with the repository root as working directory): the toy tokenizer of that commit
(copied to tests/golden/toy_tokenizer) and 24 toy conversations. Kept to show how the golden file was made; the test
compares against the file, not against this script."""

import glob
import itertools
import json
import tarfile
from pathlib import Path

from transformers import AutoTokenizer

from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.toy.tasks import training_samples


def shard_turns(name: str, count: int = 3) -> list[list[dict]]:
    with tarfile.open(sorted(glob.glob(f"data_shards/toy/{name}/*.tar"))[0]) as tar:
        members = [m for m in tar if m.name.endswith(".json")][:count]
        return [json.load(tar.extractfile(m))["turns"] for m in members]


def main() -> None:
    formatter = ChatFormatter(AutoTokenizer.from_pretrained("tests/golden/toy_tokenizer"))
    conversations = [s["turns"] for s in itertools.islice(training_samples(0), 12)]
    for name in ("asr/val", "dialog/val", "sqa/val", "mtbi/val"):
        conversations += shard_turns(name)
    rows = []
    for turns in conversations:
        row = {"turns": turns}
        for train_on in ("assistant", "last"):
            encoded = formatter.encode(turns, train_on=train_on)
            row[train_on] = {"input_ids": encoded.input_ids, "labels": encoded.labels, "audio_refs": encoded.audio_refs}
        prompt, reference = formatter.encode_prompt(turns)
        row["prompt"] = {"input_ids": prompt.input_ids, "audio_refs": prompt.audio_refs, "reference": reference}
        history = turns[:-1] if turns[-1]["role"] == "assistant" else turns
        encoded = formatter.encode(history, add_generation_prompt=True)
        row["history_prompt"] = {
            "input_ids": encoded.input_ids,
            "labels": encoded.labels,
            "audio_refs": encoded.audio_refs,
        }
        rows.append(row)
    Path("tests/golden/fallback_encodings.json").write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
