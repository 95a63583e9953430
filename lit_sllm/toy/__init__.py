"""The toy world: a small templated language, checkable text tasks, a word-level tokenizer and a tiny LLM.

Everything here is generated from seeds and small enough to commit, so a new user sees the whole suite work on a
laptop CPU with no hub access and results that can be checked exactly.
"""
