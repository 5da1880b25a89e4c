"""Ordered, bounded parallel map for the data generators.

Results come back in input order whatever the number of workers, and at most `window`
results wait in memory at a time (items can be multi-megabyte documents). With
`workers <= 1` everything runs in this process, which is also what the tests exercise
for determinism against the multi-process path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def ordered_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: Sequence[Any] = (),
    window: int | None = None,
) -> Iterator[Any]:
    """Yield fn(item) for each item, in order. `fn` and `initializer` must be picklable
    module-level functions when workers > 1; `initializer(*initargs)` runs once per
    worker (and once here when workers <= 1)."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    window = window or 2 * workers
    pending: deque[Future] = deque()
    with ProcessPoolExecutor(max_workers=workers, initializer=initializer, initargs=tuple(initargs)) as ex:
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(ex.submit(fn, item))
            if not pending:
                break
            yield pending.popleft().result()
