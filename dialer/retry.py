"""Retry policy: which outcomes are sent again, how many times, and after how long.

Only two kinds of outcome are ever sent again:
- ``retry_safe``: nothing was created; wait ``Retry-After`` if the provider gave one, else an
  exponential backoff with full jitter;
- ``ambiguous``, only with a provider whose idempotency key makes a replay harmless, and only
  while that key is still remembered (first sent less than ``replay_window`` seconds ago).

Everything else is final. A ``Retry-After`` longer than ``max_wait`` is not waited for: the
dispatcher gives the row up for this run (nothing was created, so a later run tries it again),
or, for an account-wide limit, stops the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dialer.providers.base import Kind, Outcome

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """``delay(...)`` says how long to wait before the next attempt, or ``None`` to stop."""

    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_wait: float = 600.0
    replay_window: float = 23 * 3600.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, outcome: Outcome, attempts: int, *, replay_safe: bool,
              age: float = 0.0) -> float | None:
        """Seconds to wait before attempt ``attempts + 1``, or ``None`` if the row is done.

        ``attempts`` counts the requests already sent for the row; ``age`` is how long ago the
        first of them was sent.
        """
        if attempts >= self.max_attempts:
            return None
        if outcome.kind is Kind.AMBIGUOUS and not self.may_replay(age, replay_safe=replay_safe):
            return None
        if outcome.kind not in (Kind.RETRY_SAFE, Kind.AMBIGUOUS):
            return None
        if outcome.retry_after is not None:
            return outcome.retry_after if outcome.retry_after <= self.max_wait else None
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (attempts - 1)))

    def may_replay(self, age: float, *, replay_safe: bool) -> bool:
        """Whether a request first sent ``age`` seconds ago, which may have created a call, may be
        sent again: only with a provider that makes replays harmless, while it remembers the key."""
        return replay_safe and age < self.replay_window
