"""Converters from source datasets to samples for `lit_sllm.data.shards.write_samples`.

- `manifest`: a JSONL manifest of schema samples with audio files (`write_manifest`).
- `librispeech`: a LibriSpeech split folder, as ASR samples.
- `chat`: ShareGPT or OpenAI-style chat JSONL, as text samples or with spoken user turns.
- `jsonl` and `pool`: the JSONL reader and the ordered process pool they share.
"""
