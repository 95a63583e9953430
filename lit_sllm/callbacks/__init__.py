"""Callbacks: text-only forgetting, sample tables, throughput."""
