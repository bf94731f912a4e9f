"""A virtual-time asyncio event loop, so tests of pacing and retries take no real time.

Why: the pacer, the retry delays and the dispatcher all read the event loop's clock
(``loop.time()``) and wait with ``asyncio.sleep``/timers. On ``VirtualTimeLoop`` time stands
still while there is work to do, and when every task is waiting for a timer the clock jumps
straight to the next timer instead of sleeping. Ten virtual seconds of traffic at 2,000 req/s
run in as long as the Python code takes, and every time stamp is reproducible (and exact, but
for the rare ticks described below).

How: asyncio's loop asks its selector to ``select(timeout)`` where ``timeout`` is the time to
the next timer. The selector here adds ``timeout`` to the virtual clock and then polls real
I/O without waiting (``timeout=0``), which wakes ``call_soon_threadsafe`` and the like.
A real clock also moves while code runs; a frozen one can make code spin forever. aiolimiter
does: a float residue of 1e-16 in its bucket makes it re-arm a timer for "now" again and again.
So when the loop has no callback ready and only waits for a timer that is already due, the
clock still ticks by ``TICK`` (1 µs); otherwise time moves only by whole waits, exactly.

Limits: no real network I/O under it (a socket would see virtual timeouts expire at once, and
real latency would not be counted); threads (``run_in_executor``) work but their real duration
counts as zero virtual time. Two ways a test could hang raise ``RuntimeError`` instead: nothing
at all scheduled (``select(None)``: only something outside the loop could wake it, and nothing
did for ``idle_limit`` real seconds: a deadlock), and ``spin_limit`` loop turns in a row without
the clock moving (a busy loop, e.g. ``wait_for(..., timeout=0)`` over and over, which on a real
clock burns CPU until the time it waits for comes).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["VirtualTimeLoop", "run_virtual", "run_virtual_timed", "TICK"]

T = TypeVar("T")

TICK = 1e-6
"""How far the clock moves when the loop waits for a timer that is already due."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A real selector whose waits advance a virtual clock instead of taking real time."""

    def __init__(self, start: float, idle_limit: float, spin_limit: int) -> None:
        super().__init__()
        self.now = start
        self.idle_limit, self.spin_limit = idle_limit, spin_limit
        self.loop: asyncio.AbstractEventLoop | None = None
        self._still = 0  # loop turns in a row without the clock moving

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled: only something outside the loop can wake it
            events = super().select(self.idle_limit)
            if not events:
                raise RuntimeError(f"virtual loop: no timer and no I/O for {self.idle_limit} s of real "
                                   "time; every task is waiting for something that never happens")
            return events
        if timeout > 0:
            self.now += timeout
        elif not getattr(self.loop, "_ready", True):  # only a due timer: let the clock tick
            self.now += TICK
        else:
            self._still += 1
            if self._still > self.spin_limit:
                self._still = 0  # let the caller clean up on this loop
                raise RuntimeError(f"virtual loop: {self.spin_limit} turns without time moving at "
                                   f"t={self.now}; some task is busy-waiting")
            return super().select(0)
        self._still = 0
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual; see the module docstring."""

    def __init__(self, start: float = 0.0, idle_limit: float = 5.0, spin_limit: int = 100_000) -> None:
        self._virtual = _VirtualSelector(start, idle_limit, spin_limit)
        super().__init__(self._virtual)
        self._virtual.loop = self

    def time(self) -> float:
        return self._virtual.now


def run_virtual_timed(main: Awaitable[T] | Callable[[], Awaitable[T]], *,
                      start: float = 0.0) -> tuple[T, float]:
    """Run ``main`` (a coroutine, or a function returning one) on a fresh virtual loop.

    Returns its result and the virtual time when it finished. Like ``asyncio.run``, tasks still
    running at the end are cancelled and the loop is closed.
    """
    loop = VirtualTimeLoop(start)
    try:
        result = loop.run_until_complete(main() if callable(main) else main)
        return result, loop.time()
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def run_virtual(main: Awaitable[T] | Callable[[], Awaitable[T]], *, start: float = 0.0) -> T:
    """``run_virtual_timed`` without the end time."""
    return run_virtual_timed(main, start=start)[0]
