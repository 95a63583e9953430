"""The LibriSpeech converter: one split folder -> ASR samples, FLAC files stored as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lit_sllm.data.shards import SkipLog, StoredSample

ASR_PROMPT = "Transcribe the audio."


def flac_asr_sample(key: str, transcript: str, flac: bytes, prompt: str = ASR_PROMPT) -> StoredSample:
    """An ASR sample: the user gives the clip and `prompt`, the assistant answers with the transcript."""
    turns = [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": prompt}]},
        {"role": "assistant", "parts": [{"text": transcript}]},
    ]
    return {"key": key, "task": "asr", "transcript": transcript, "turns": turns}, {"flac": flac}


def librispeech_to_samples(
    root: str | Path, skips: SkipLog | None = None, prompt: str = ASR_PROMPT
) -> Iterator[StoredSample]:
    """ASR samples from a LibriSpeech split: `root/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with
    transcripts in `<speaker>-<chapter>.trans.txt` ("<utt id> <TEXT>" per line); keys are the utterance ids.

    The FLAC files are stored as they are. A transcript line without its FLAC ("no_audio"), a FLAC without a
    transcript line ("no_transcript") and a line without text ("bad_transcript") are counted in `skips`.

    Raises:
        FileNotFoundError: at once, when `root` has no speaker/chapter folders with FLAC or transcripts.
    """
    root, skips = Path(root), skips if skips is not None else SkipLog()
    chapters = sorted({path.parent for pattern in ("*/*/*.flac", "*/*/*.trans.txt") for path in root.glob(pattern)})
    if not chapters:
        raise FileNotFoundError(
            f"no <speaker>/<chapter>/*.flac or *.trans.txt under {root}: pass one LibriSpeech split folder, "
            "e.g. LibriSpeech/train-clean-100."
        )
    return _librispeech_samples(chapters, prompt, skips)


def _chapter_transcripts(chapter: Path, skips: SkipLog) -> dict[str, tuple[str, str]]:
    """Utterance id -> (transcript, "file:line") for every transcript file of one chapter folder."""
    transcripts = {}
    for trans in sorted(chapter.glob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            utt, _, text = line.strip().partition(" ")
            if utt and text.strip():
                transcripts[utt] = (text.strip(), f"{trans}:{lineno}")
            elif utt:
                skips.add("bad_transcript", f"{trans}:{lineno}", f"expected '<utt id> <text>', got {line!r}")
    return transcripts


def _librispeech_samples(chapters: list[Path], prompt: str, skips: SkipLog) -> Iterator[StoredSample]:
    for chapter in chapters:
        transcripts = _chapter_transcripts(chapter, skips)
        flacs = {path.name.removesuffix(".flac"): path for path in chapter.glob("*.flac")}
        for utt in sorted(transcripts.keys() | flacs.keys()):
            if utt not in flacs:
                skips.add("no_audio", transcripts[utt][1], f"transcript of {utt} has no {utt}.flac in {chapter}")
            elif utt not in transcripts:
                skips.add("no_transcript", str(flacs[utt]), f"{utt} has no line in {chapter}/*.trans.txt")
            else:
                yield flac_asr_sample(utt, transcripts[utt][0], flacs[utt].read_bytes(), prompt)
