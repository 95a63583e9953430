"""Callbacks: text-only forgetting, sample tables, throughput, SLURM requeue between steps."""
