"""Pacing: never more than ``rate`` requests in any 1-second window, and close to ``rate``.

Two parts, each doing what it is good at:
- an ``aiolimiter.AsyncLimiter`` drips permits at ``rate / (1 + margin)`` per second from a small
  bucket (1/50 s of traffic), so requests go out evenly instead of in bursts;
- a sliding-window log of the last ``rate`` send times enforces the hard bound: a request may
  leave only when the ``rate``-th previous one left at least ``1 + margin`` seconds ago. This
  also removes the leaky bucket's first-second burst, which alone lets about ``2 * rate`` through.

``margin`` (default 10 ms) absorbs network jitter between our clock and the provider's.
Time is the event loop's (``loop.time()``), so tests run this on a virtual-time loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from aiolimiter import AsyncLimiter

__all__ = ["Pacer"]


class Pacer:
    """``await pacer.acquire()`` before each request; ``rate=None`` means unlimited."""

    __slots__ = ("rate", "margin", "_limiter", "_sent", "_lock", "_window", "_started")

    def __init__(self, rate: float | None, *, margin: float = 0.01) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.margin = margin
        self._window = 1.0 + margin
        self._lock = asyncio.Lock()
        self._started = False
        if rate is None:
            self._limiter = None
            self._sent: deque[float] = deque()
            return
        bucket = max(1.0, rate / 50)
        self._limiter = AsyncLimiter(bucket, bucket * self._window / rate)
        self._sent = deque(maxlen=max(1, math.floor(rate)))

    def __repr__(self) -> str:
        if self.rate is None:
            return "Pacer(rate=None)"
        return f"Pacer(rate={self.rate:g}/s, margin={self.margin * 1000:g} ms)"

    async def acquire(self) -> None:
        """Wait until one more request may leave without breaking the rate."""
        if self._limiter is None:
            return
        if not self._started:  # start with a full bucket: no burst at the start
            self._started = True
            await self._limiter.acquire(self._limiter.max_rate)
        await self._limiter.acquire()
        async with self._lock:
            loop = asyncio.get_running_loop()
            if len(self._sent) == self._sent.maxlen:
                wait = self._sent[0] + self._window - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._sent.append(loop.time())
