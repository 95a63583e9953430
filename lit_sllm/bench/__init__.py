"""Benchmarks that measure the suite against plain baselines and the anchors (lhotse, SLAM-LLM, Ultravox), side by
side in one process, as ratios; `lit-sllm bench NAME` runs one and writes `bench/results/NAME.json`."""
