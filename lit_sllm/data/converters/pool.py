"""An order-keeping map over a process pool, for converters whose per-item work (audio encoding) is CPU-bound."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, ahead: int = 4) -> Iterator[Any]:
    """`fn` over `items` in input order; with `workers` > 1 in a process pool, at most `workers * ahead` in flight.

    Each worker runs torch on one thread, so `workers` processes use about `workers` cores.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
