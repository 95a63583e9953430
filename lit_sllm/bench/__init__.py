"""Benchmarks that measure the suite against plain baselines and the anchors (lhotse, SLAM-LLM, Ultravox), side by
side in one process, as ratios; `lit-sllm bench NAME` runs one and writes `bench/results/NAME.json`."""

# name -> module exposing `run(quick: bool) -> Outcome`; imported only when its benchmark runs.
BENCHMARKS: dict[str, str] = {
    "padding": "lit_sllm.bench.padding",
    "data": "lit_sllm.bench.data",
    "augment": "lit_sllm.bench.augment",
    "step": "lit_sllm.bench.step",
    "kd": "lit_sllm.bench.kd",
    "memory": "lit_sllm.bench.memory",
    "startup": "lit_sllm.bench.startup",
    "gpu": "lit_sllm.bench.gpu",
}
# names that stand for several benchmarks
GROUPS: dict[str, tuple[str, ...]] = {"cpu": ("padding", "data", "augment", "step", "kd", "memory", "startup")}
