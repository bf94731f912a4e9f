"""The dispatcher: a fixed pool of workers that place the journal's pending calls.

Each worker repeats: take the next row (a retry that is due, else the next pending row from the
journal, read lazily), wait while the account is paused by a 429, wait for the pacer, commit the
row as ``sending``, send, and act on the outcome's kind:

    created / already_created / rejected    final: initiated, scheduled or failed
    retry_safe                              back to pending; retried after a delay (the retry
                                            policy), an account-wide 429 pauses every worker
    ambiguous                               replayed with the same key if the provider makes that
                                            harmless, else final: unknown
    fatal                                   every worker stops taking rows; the run ends

At most ``concurrency`` requests are in flight, memory does not grow with the number of rows,
and time is the event loop's, so tests can run all of this on a virtual clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import pyarrow as pa

from dialer.contacts import Contacts
from dialer.journal import Journal, PendingRow
from dialer.pacing import Pacer
from dialer.plan import Status
from dialer.providers.base import Call, Kind, Outcome, Provider, snake_case
from dialer.retry import RetryPolicy

__all__ = ["Dispatcher", "DispatchResult", "CallFactory", "idempotency_key"]

_NAMESPACE = uuid.UUID("8f6d3c3e-5a1b-4b7e-9a51-6f0f3b1d2c4a")


def idempotency_key(campaign_id: str, agent_id: int, e164: str) -> str:
    """The same key for the same campaign, agent and number, in every run and resume."""
    return str(uuid.uuid5(_NAMESPACE, f"{campaign_id}\x1f{agent_id}\x1f{e164}"))


class CallFactory:
    """Builds the ``Call`` for a journal row from the contacts' other non-empty cells."""

    def __init__(self, contacts: Contacts, *, campaign_id: str, agent_id: int) -> None:
        self._campaign_id, self._agent_id = campaign_id, agent_id
        self._columns: list[tuple[str, pa.ChunkedArray]] = []
        used = {"customer_phone"}
        for index, header in enumerate(contacts.header):
            if index == contacts.phone_index:
                continue
            name = base = snake_case(header)
            for suffix in itertools.count(2):
                if name not in used:
                    break
                name = f"{base}_{suffix}"
            used.add(name)
            self._columns.append((name, pa.chunked_array(pa.array(contacts.frame[index], type=pa.string()))))

    def __call__(self, row: PendingRow) -> Call:
        fields = []
        for name, column in self._columns:
            value = column[row.row].as_py()
            if value:
                fields.append((name, value))
        return Call(row.row, row.e164, tuple(fields), idempotency_key(self._campaign_id, self._agent_id, row.e164))


@dataclass
class DispatchResult:
    """What the dispatcher did in this run."""

    sent: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    fatal: str | None = None
    interrupted: bool = False


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    row: PendingRow = field(compare=False)


class Dispatcher:
    """Place every pending call of ``journal`` through ``provider``; see the module docstring."""

    def __init__(self, provider: Provider, journal: Journal, make_call: Callable[[PendingRow], Call], *,
                 pacer: Pacer, retry: RetryPolicy, concurrency: int,
                 on_progress: Callable[[DispatchResult], None] | None = None,
                 wall_clock: Callable[[], float] = time.time, grace: float = 10.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.provider, self.journal, self.make_call = provider, journal, make_call
        self.pacer, self.retry, self.concurrency = pacer, retry, concurrency
        self.on_progress = on_progress or (lambda result: None)
        self.wall_clock, self.grace = wall_clock, grace
        self.result = DispatchResult()
        self._retries: list[_Retry] = []
        self._order = itertools.count()
        self._paused_until = 0.0
        self._stopping: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._source: Iterator[PendingRow] = iter(())

    def __repr__(self) -> str:
        return f"<Dispatcher {self.provider!r} {self.pacer!r} concurrency={self.concurrency} {self.retry!r}>"

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def run(self, session: aiohttp.ClientSession) -> DispatchResult:
        """Place every pending call; return when all are done, or after ``stop``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._stopping = asyncio.Event()
        self._source = self.journal.pending()
        self._workers = [asyncio.create_task(self._work(session)) for _ in range(self.concurrency)]
        try:
            outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            self.result.elapsed = loop.time() - started
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return self.result

    def stop(self, *, interrupted: bool = False) -> None:
        """Take no more rows; requests in flight get ``grace`` seconds to finish, then are cancelled."""
        if self._stopping is None or self._stopping.is_set():
            return
        self.result.interrupted |= interrupted
        self._stopping.set()
        asyncio.get_running_loop().call_later(self.grace, self.cancel)

    def cancel(self) -> None:
        """Stop at once: requests in flight are abandoned (their rows stay ``sending``)."""
        for worker in self._workers:
            worker.cancel()

    async def _work(self, session: aiohttp.ClientSession) -> None:
        while (row := await self._next_row()) is not None:
            await self._attempt(session, row)

    async def _next_row(self) -> PendingRow | None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            if self._retries and self._retries[0].due <= loop.time():
                return heapq.heappop(self._retries).row
            row = next(self._source, None)
            if row is not None:
                return row
            if not self._retries:
                return None
            await self._sleep(self._retries[0].due - loop.time())
        return None

    async def _attempt(self, session: aiohttp.ClientSession, row: PendingRow) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < self._paused_until and not self.stopping:
            await self._sleep(self._paused_until - loop.time())
        if not self.stopping:
            await self.pacer.acquire()
        if self.stopping:
            return  # not sent: the row stays as the journal has it
        call = self.make_call(row)
        now = self.wall_clock()
        self.journal.mark_sending(row.row, call.idempotency_key, now)
        self.result.sent += 1
        outcome = await self.provider.place(session, call)
        self._record(row, outcome, first_sent=row.first_sent or now)

    def _record(self, row: PendingRow, outcome: Outcome, *, first_sent: float) -> None:
        now, attempts = self.wall_clock(), row.attempts + 1
        kind = outcome.kind
        if kind is Kind.CREATED:
            self._finish(row, outcome.status, call_id=outcome.call_id, now=now)
        elif kind is Kind.ALREADY_CREATED:
            self._finish(row, Status.INITIATED, error=outcome.message, now=now)
        elif kind is Kind.REJECTED:
            self._finish(row, Status.FAILED, error=outcome.message, now=now)
        elif kind is Kind.FATAL:
            self.journal.mark_pending(row.row, outcome.message, now)
            self.result.fatal = self.result.fatal or outcome.message
            self.stop()
        else:
            self._retry_or_finish(row, outcome, attempts, first_sent, now)

    def _retry_or_finish(self, row: PendingRow, outcome: Outcome, attempts: int, first_sent: float,
                         now: float) -> None:
        delay = self.retry.delay(outcome, attempts, replay_safe=self.provider.replay_safe, age=now - first_sent)
        if delay is None:
            if outcome.kind is Kind.RETRY_SAFE:
                self._finish(row, Status.FAILED, error=f"gave up after {attempts} attempts: {outcome.message}", now=now)
            else:
                self._finish(row, Status.UNKNOWN, error=outcome.message, now=now)
            return
        if outcome.kind is Kind.RETRY_SAFE:
            self.journal.mark_pending(row.row, outcome.message, now)
        loop_now = asyncio.get_running_loop().time()
        if outcome.account_wide:
            self._paused_until = max(self._paused_until, loop_now + delay)
        self.result.retries += 1
        self._requeue(PendingRow(row.row, row.e164, attempts, first_sent), loop_now + delay)

    def _requeue(self, row: PendingRow, due: float) -> None:
        heapq.heappush(self._retries, _Retry(due, next(self._order), row))

    def _finish(self, row: PendingRow, status: str, *, call_id: str = "", error: str = "", now: float) -> None:
        self.journal.finish(row.row, status, call_id=call_id, error=error, now=now)
        self.result.statuses[status] += 1
        self.on_progress(self.result)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run is stopped."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass
