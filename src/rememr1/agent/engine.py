"""The engine: every episode at its own pace (SPEC §10).

    async for episode in drive(episodes, backend=b, sampling=s, concurrency=64):
        episode.result()                      # as soon as that episode finished

One asyncio task per episode runs `next_request -> backend.asubmit -> consume` until the
episode is done, so an episode sends its next request the moment its previous reply is
in; no round waits for its slowest member. At most `concurrency` episodes are open at
once (the others are not even built: `episodes` is consumed lazily), so a crash loses at
most that many episodes' work. Servers batch the concurrent requests themselves
(continuous batching); in-process backends batch whatever is waiting
(`backends.base.DynamicBatcher`).

`run_sync` drives the same coroutine from synchronous code: a private event loop in the
calling thread, advanced each time the caller asks for the next finished episode, so
callbacks (`on_step`) and the caller's own work (writing results) happen in the caller's
thread. Inside a running event loop (a notebook) it moves to a helper thread.

`hold_loop` keeps what a backend bound to the running loop (an HTTP client and its
connections) open while anyone on that loop still uses it: every `drive` holds it while it
runs, so concurrent `Agent.aanswer` calls on one loop never close each other's client, and
a long-lived caller (`rememr1 serve`) holds it for its lifetime, so connections are reused
from one episode to the next instead of reopened for each.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager

from ..backends.base import Backend, SamplingParams
from ..records import StepRecord
from .episode import Episode

StepCallback = Callable[[Episode, StepRecord], None]


async def drive(
    episodes: Iterable[Episode],
    *,
    backend: Backend,
    sampling: SamplingParams,
    concurrency: int | None = None,
    on_step: StepCallback | None = None,
) -> AsyncIterator[Episode]:
    """Run episodes to completion, at most `concurrency` at once (None: all), yielding each
    as it finishes. A backend failure (server down) cancels the rest and is raised."""
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    source = iter(episodes)
    running: set[asyncio.Task] = set()

    async def run(episode: Episode) -> Episode:
        while not episode.done:
            generation = await backend.asubmit(episode.next_request(), sampling)
            record = episode.consume(generation)
            if on_step is not None:
                on_step(episode, record)
        return episode

    def refill() -> None:
        while concurrency is None or len(running) < concurrency:
            episode = next(source, None)
            if episode is None:
                return
            running.add(asyncio.ensure_future(run(episode)))

    async with hold_loop(backend):
        try:
            refill()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.discard(task)
                for task in done:
                    yield task.result()
                refill()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)


_holders: dict[tuple[Backend, asyncio.AbstractEventLoop], int] = {}


@asynccontextmanager
async def hold_loop(backend: Backend) -> AsyncIterator[None]:
    """Keep `backend`'s per-loop resources open until the last holder on the running loop
    leaves; then `backend.release_loop()` (module docstring)."""
    key = (backend, asyncio.get_running_loop())
    _holders[key] = _holders.get(key, 0) + 1
    try:
        yield
    finally:
        _holders[key] -= 1
        if not _holders[key]:
            del _holders[key]
            await backend.release_loop()


def run_sync(agen_factory: Callable[[], AsyncIterator[Episode]]) -> Iterator[Episode]:
    """Iterate an async generator of episodes from synchronous code (module docstring)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        yield from _in_this_thread(agen_factory)
    else:
        yield from _in_helper_thread(agen_factory)


def _in_this_thread(agen_factory) -> Iterator[Episode]:
    loop = asyncio.new_event_loop()
    agen = agen_factory()
    try:
        while True:
            try:
                episode = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            yield episode
    finally:
        try:
            # A Ctrl-C raised inside the loop's wait leaves the generator's step running
            # as a task: cancel it (and the episodes it awaits) before closing.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
            loop.run_until_complete(agen.aclose())  # cancels what is still running
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


_DONE = object()


def _in_helper_thread(agen_factory) -> Iterator[Episode]:
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    async def pump():
        async for episode in agen_factory():
            out.put(episode)
            if stop.is_set():
                return

    def target():
        try:
            asyncio.run(pump())
            out.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            out.put(exc)

    thread = threading.Thread(target=target, name="rememr1-engine", daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


__all__ = ["StepCallback", "drive", "hold_loop", "run_sync"]
