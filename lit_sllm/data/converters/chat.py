"""The chat converter: ShareGPT or OpenAI-style chat JSONL -> text samples, or dialogs with spoken user turns."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lit_sllm.data.audio import encode_flac
from lit_sllm.data.converters.jsonl import line_key, read_jsonl
from lit_sllm.data.schema import SchemaError, parse_meta
from lit_sllm.data.shards import SkipLog, StoredSample
from lit_sllm.data.tts import TTS

CHAT_FORMATS = {"conversations": ("from", "value"), "messages": ("role", "content")}  # list field -> (role, text)
CHAT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def chat_turns(record: dict, key: str | None = None) -> list[dict]:
    """Text turns of one ShareGPT (`conversations` of `from`/`value`) or OpenAI-style (`messages` of
    `role`/`content`) record.

    Raises:
        SchemaError: for a record in neither format, an unknown role or a non-string text.
    """
    field_name = next((name for name in CHAT_FORMATS if name in record), None)
    if field_name is None or not isinstance(record[field_name], list):
        fix = 'write {"conversations": [{"from": "human", "value": ...}]} or {"messages": [{"role": ..., ...}]}'
        raise SchemaError("no 'conversations' or 'messages' list", key=key, fix=fix)
    role_key, text_key = CHAT_FORMATS[field_name]
    turns = []
    for i, message in enumerate(record[field_name]):
        role = CHAT_ROLES.get(message.get(role_key)) if isinstance(message, dict) else None
        if role is None or not isinstance(message.get(text_key), str):
            problem = f"expected '{role_key}' in {sorted(CHAT_ROLES)} and a string '{text_key}', got {message!r:.100}"
            raise SchemaError(problem, key=key, field=f"{field_name}[{i}]", fix="fix or drop the message")
        turns.append({"role": role, "parts": [{"text": message[text_key]}]})
    return turns


SpeechTurnPicker = Callable[[list[int], random.Random], list[int]]
SPEECH_TURN_POLICIES: dict[str, SpeechTurnPicker] = {
    "first": lambda users, rng: users[:1],
    "all": lambda users, rng: users,
}


def speech_turn_picker(policy: str | float) -> SpeechTurnPicker:
    """Which user turns to speak: "first", "all", or each one with probability `policy` (a number in [0, 1])."""
    if policy in SPEECH_TURN_POLICIES:
        return SPEECH_TURN_POLICIES[policy]
    try:
        probability = float(policy)
    except (TypeError, ValueError):
        probability = -1.0
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"speech_turns must be 'first', 'all' or a probability in [0, 1], got {policy!r}.")
    return lambda users, rng: [turn for turn in users if rng.random() < probability]


def speak_turns(key: str, turns: list[dict], chosen: list[int], tts: TTS) -> StoredSample:
    """Replaces the text of the `chosen` turns by their speech, stored as `0.flac`, `1.flac`, ... in turn order.

    The sample is a "dialog" with the spoken texts, joined by spaces, as its transcript; "text" if none is spoken.
    """
    turns, audio, spoken = [dict(turn) for turn in turns], {}, []
    for clip, index in enumerate(chosen):
        text = turns[index]["parts"][0]["text"]
        audio[f"{clip}.flac"] = encode_flac(tts.synthesize(text), tts.sample_rate)
        turns[index]["parts"] = [{"audio": f"{clip}.flac"}]
        spoken.append(text)
    meta = {"key": key, "task": "dialog" if audio else "text", "turns": turns}
    return (meta | {"transcript": " ".join(spoken)} if spoken else meta), audio


def chat_to_samples(
    jsonl: str | Path,
    tts: TTS | None = None,
    speech_turns: str | float = "first",
    seed: int = 0,
    skips: SkipLog | None = None,
) -> Iterator[StoredSample]:
    """Samples from a chat JSONL (ShareGPT or OpenAI/Magpie style), keyed by file name and line number.

    Without `tts` every conversation is a text-only sample (task "text"). With `tts`, the user turns picked by
    `speech_turns` are spoken and stored as audio (task "dialog"), giving VoiceTextBlender's mixed-modal SFT data;
    the pick is seeded per line, so a line's result does not depend on the lines before it. Lines with bad JSON,
    unknown formats or roles, or no assistant turn are counted in `skips`.
    """
    path, skips = Path(jsonl), skips if skips is not None else SkipLog()
    picker = speech_turn_picker(speech_turns)
    return _chat_samples(path, read_jsonl(path, skips), tts, picker, seed, skips)


def _chat_samples(
    path: Path,
    records: Iterable[tuple[int, dict]],
    tts: TTS | None,
    picker: SpeechTurnPicker,
    seed: int,
    skips: SkipLog,
) -> Iterator[StoredSample]:
    for lineno, record in records:
        where, key = f"{path}:{lineno}", line_key(path, lineno)
        try:
            turns = parse_meta({"task": "text", "turns": chat_turns(record, key)}, key=key)["turns"]
        except SchemaError as err:
            skips.add("schema", where, str(err))
            continue
        if not any(turn["role"] == "assistant" for turn in turns):
            skips.add("no_assistant", where, "the conversation has no assistant turn to train on")
        elif tts is None:
            yield {"key": key, "task": "text", "turns": turns}, {}
        else:
            users = [i for i, turn in enumerate(turns) if turn["role"] == "user" and turn["parts"][0]["text"].strip()]
            yield speak_turns(key, turns, picker(users, random.Random(f"{seed}:{lineno}")), tts)
