"""lit_sllm: a PyTorch Lightning suite for training speech LLMs that keep their text skills."""

__version__ = "0.1.0"
