"""Pacing: never more than ``rate`` requests in any 1-second window, and close to ``rate``.

Two parts, each doing what it is good at:
- an ``aiolimiter.AsyncLimiter`` drips permits at ``rate / (1 + margin)`` per second from a small
  bucket (1/50 s of traffic) that starts full, so requests go out evenly, without a first burst;
- a sliding-window log enforces the hard bound. It holds the time each request actually left
  (``Permit.sent``, called when its headers are written), not the time it was allowed to: a
  request that waits for a connection or a slow event loop still counts from when the provider
  can see it. A permit not yet sent counts as in the window. A new permit is granted only while
  fewer than ``rate`` requests have left, or may leave, within the last ``1 + margin`` seconds.

``margin`` (default 10 ms) absorbs network jitter between our clock and the provider's.
Time is the event loop's (``loop.time()``), so tests run this on a virtual-time loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from aiolimiter import AsyncLimiter

__all__ = ["Pacer", "Permit"]


class Permit:
    """One request's place in the window: call ``sent()`` when it leaves (later calls are ignored)."""

    __slots__ = ("sent_at", "_pacer")

    def __init__(self, pacer: Pacer | None) -> None:
        self.sent_at: float | None = None
        self._pacer = pacer

    def sent(self) -> None:
        if self.sent_at is None:
            self.sent_at = asyncio.get_running_loop().time()
            if self._pacer is not None:
                self._pacer._settled.set()


class Pacer:
    """``permit = await pacer.acquire()`` before each request, ``permit.sent()`` as it leaves;
    ``rate=None`` means unlimited."""

    __slots__ = ("rate", "margin", "_limiter", "_log", "_capacity", "_lock", "_settled", "_window", "_started")

    def __init__(self, rate: float | None, *, margin: float = 0.01) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.margin = margin
        self._window = 1.0 + margin
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        self._started = False
        self._log: deque[Permit] = deque()
        self._capacity = max(1, math.floor(rate)) if rate is not None else 0
        if rate is None:
            self._limiter = None
            return
        bucket = max(1.0, rate / 50)
        self._limiter = AsyncLimiter(bucket, bucket * self._window / rate)

    def __repr__(self) -> str:
        if self.rate is None:
            return "Pacer(rate=None)"
        return f"Pacer(rate={self.rate:g}/s, margin={self.margin * 1000:g} ms)"

    async def acquire(self) -> Permit:
        """Wait until one more request may leave without breaking the rate."""
        if self._limiter is None:
            return Permit(None)
        if not self._started:  # start with a full bucket: no burst at the start
            self._started = True
            await self._limiter.acquire(self._limiter.max_rate)
        await self._limiter.acquire()
        async with self._lock:
            loop = asyncio.get_running_loop()
            while True:
                horizon = loop.time() - self._window
                while self._log and self._log[0].sent_at is not None and self._log[0].sent_at <= horizon:
                    self._log.popleft()
                if len(self._log) < self._capacity:
                    break
                oldest = self._log[0].sent_at
                if oldest is None:  # the oldest has not left yet: wait until some request does
                    self._settled.clear()
                    await self._settled.wait()
                else:
                    await asyncio.sleep(oldest - horizon)
            permit = Permit(self)
            self._log.append(permit)
            return permit
