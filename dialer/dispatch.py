"""The dispatcher: a fixed pool of workers that place the journal's pending calls.

Each worker repeats: take the next row (a retry that is due, else the next pending row from the
journal, read lazily in passes), ask the calling window (send, wait for it, or skip to a later
run), wait while the account is paused by a 429, wait for the pacer, claim the row as
``sending`` in the journal (a stale copy fails the claim and is dropped), wait for the journal
to commit the claim (one commit per turn of the event loop serves every claim made in it), send,
and act on the outcome's kind:

    created / already_created / rejected    final: initiated, scheduled or failed
    retry_safe                              back to pending; retried after a delay (the retry
                                            policy); an account-wide 429 pauses every worker;
                                            given up on: failed, and a later run tries again
    ambiguous                               replayed with the same key if the provider makes that
                                            harmless, else final: unknown
    fatal                                   every worker stops taking rows; the run ends

A row that may already have been called (``in_doubt``) is only ever sent again as a replay
that the provider makes harmless, and never reported as not called. A pass reads rows ahead, so
its copy of a row may be stale: the claim refuses it (see ``_may_act_on``).

At most ``concurrency`` requests are in flight, memory does not grow with the number of rows,
and time is the event loop's, so tests can run all of this on a virtual clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
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
from dialer.errors import ColumnError
from dialer.journal import Journal, PendingRow
from dialer.pacing import Pacer
from dialer.plan import Status
from dialer.parameters import ParameterMap
from dialer.providers.base import Call, Kind, Outcome, Provider
from dialer.retry import RetryPolicy
from dialer.windows import WindowPolicy

__all__ = ["Dispatcher", "DispatchResult", "CallFactory", "idempotency_key"]

_NAMESPACE = uuid.UUID("8f6d3c3e-5a1b-4b7e-9a51-6f0f3b1d2c4a")
_BLOCK_CELLS = 8192   # cells read from Arrow at a time
_BLOCKS_KEPT = 4      # the block of the pass, and a few for retries


def idempotency_key(campaign_id: str, agent_id: int, e164: str) -> str:
    """The same key for the same campaign, agent and number, in every run and resume."""
    return str(uuid.uuid5(_NAMESPACE, f"{campaign_id}\x1f{agent_id}\x1f{e164}"))


class CallFactory:
    """Builds the ``Call`` for a journal row from its cells, as the campaign's parameters say.

    Only the cells calls use are read, from Arrow, a block of rows at a time (rows are mostly
    taken in file order), and the idempotency key hashes only the number onto a hash of what all
    keys share."""

    def __init__(self, contacts: Contacts, *, campaign_id: str, agent_id: int,
                 parameters: ParameterMap = ParameterMap(), zone_column: str | None = None) -> None:
        self._bound = parameters.bind(contacts.header, contacts.phone_index)
        if zone_column is not None and zone_column not in contacts.header:
            raise ColumnError(f"window.timezone_column names the column {zone_column!r}, "
                              "which the contacts file does not have")
        self._zone_index = contacts.header.index(zone_column) if zone_column is not None else None
        used = sorted(self._bound.columns | ({self._zone_index} if self._zone_index is not None else set()))
        self._columns = {i: pa.array(contacts.frame[i]) for i in used}  # Arrow, chunked or not
        self._block_rows = max(1, _BLOCK_CELLS // max(1, len(used)))
        self._blocks: dict[int, dict[int, list[str]]] = {}  # first row -> cells by column, least recently used first
        self._key_prefix = hashlib.sha1(_NAMESPACE.bytes + f"{campaign_id}\x1f{agent_id}\x1f".encode(),
                                        usedforsecurity=False)

    def zone_cell(self, row: int) -> str:
        """The row's time zone cell, or ``""`` when the campaign names no time zone column."""
        return self.cells(row)[self._zone_index] if self._zone_index is not None else ""

    def cells(self, row: int) -> dict[int, str]:
        """The cells of ``row`` that calls use, by column position."""
        start = row - row % self._block_rows
        block = self._blocks.pop(start, None)
        if block is None:
            if len(self._blocks) == _BLOCKS_KEPT:
                del self._blocks[next(iter(self._blocks))]
            block = {i: column.slice(start, self._block_rows).to_pylist() for i, column in self._columns.items()}
        self._blocks[start] = block
        return {i: values[row - start] for i, values in block.items()}

    def key(self, e164: str) -> str:
        """``idempotency_key(campaign_id, agent_id, e164)``, computed faster."""
        digest = self._key_prefix.copy()
        digest.update(e164.encode())
        return str(uuid.UUID(bytes=digest.digest()[:16], version=5))

    def __call__(self, row: PendingRow) -> Call:
        cells = self.cells(row.row)
        bound = self._bound
        return Call(row.row, row.e164, bound.values(cells), self.key(row.e164),
                    conversation_id=bound.conversation_id(cells), retry_context=bound.retry_context(cells),
                    metadata=bound.metadata(cells))


@dataclass
class DispatchResult:
    """What the dispatcher did in this run."""

    sent: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    fatal: str | None = None
    interrupted: bool = False
    waiting_until: float | None = None
    """Wall-clock time the run is waiting for (a calling window), while it waits."""


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    row: PendingRow = field(compare=False)


class Dispatcher:
    """Place every pending call of ``journal`` through ``provider``; see the module docstring."""

    def __init__(self, provider: Provider, journal: Journal, make_call: CallFactory, *,
                 pacer: Pacer, retry: RetryPolicy, concurrency: int, window: WindowPolicy | None = None,
                 on_progress: Callable[[DispatchResult], None] | None = None,
                 wall_clock: Callable[[], float] = time.time, grace: float = 10.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.provider, self.journal, self.make_call = provider, journal, make_call
        self.pacer, self.retry, self.concurrency, self.window = pacer, retry, concurrency, window
        self.on_progress = on_progress or (lambda result: None)
        self.wall_clock, self.grace = wall_clock, grace
        self.result = DispatchResult()
        self._retries: list[_Retry] = []
        self._order = itertools.count()
        self._paused_until = 0.0
        self._stopping: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._source: Iterator[PendingRow] = iter(())
        self._held: set[int] = set()  # rows taken by a worker or waiting in ``_retries``
        self._pass_started = 0.0
        self._next_due: float | None = None  # the earliest time a row left out of this pass is due
        self._waiting: list[asyncio.Future[None]] = []  # workers waiting for the next commit

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
        self._start_pass()
        self._workers = [asyncio.create_task(self._work(session)) for _ in range(self.concurrency)]
        try:
            outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            self.journal.commit()
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

    def _start_pass(self) -> None:
        """Read the journal's due rows again from the top (rows waiting for a window may be due)."""
        self._pass_started = self.wall_clock()
        self._source = self.journal.pending(self._pass_started)
        self._next_due = self.journal.next_due(after=self._pass_started)

    async def _work(self, session: aiohttp.ClientSession) -> None:
        try:
            while (row := await self._next_row()) is not None:
                self._held.add(row.row)
                if not await self._attempt(session, row):
                    self._held.discard(row.row)
        except Exception:
            self.stop()  # a bug: stop everyone, so that the report is written at once
            raise

    async def _next_row(self) -> PendingRow | None:
        """A retry that is due, else the next pending row; waits for retries and calling windows."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            if self._retries and self._retries[0].due <= loop.time():
                return heapq.heappop(self._retries).row
            for row in self._source:
                if row.row not in self._held and self._may_act_on(row):
                    return row
            wake = [self._retries[0].due] if self._retries else []
            due = self._next_due
            if due is not None:
                wake.append(loop.time() + due - self.wall_clock())
                self.result.waiting_until = due
                self.on_progress(self.result)
            self.journal.commit()  # nothing to send for now: make the outcomes so far durable
            if not wake:
                return None
            await self._sleep(min(wake) - loop.time())
            if due is not None and self.wall_clock() >= due:
                self.result.waiting_until = None
                self._start_pass()
        return None

    async def _attempt(self, session: aiohttp.ClientSession, row: PendingRow) -> bool:
        """Try ``row`` once; return True if it was put back to be retried later."""
        loop = asyncio.get_running_loop()
        if row.in_doubt and not self._may_replay(row):
            self._finish(row, Status.UNKNOWN, error="an earlier request may have created this call, and it "
                                                    "cannot be replayed safely now", now=self.wall_clock())
            return False
        call = self.make_call(row)
        if self.window is not None:
            now = self.wall_clock()
            decision = self.window.decide(row.e164, dt.datetime.fromtimestamp(now, dt.timezone.utc),
                                          self.make_call.zone_cell(row.row))
            if decision.action == "skip":
                self.journal.defer(row.row, Status.OUTSIDE_WINDOW, decision.reason, now)
                self._count(Status.UNKNOWN if row.in_doubt else Status.OUTSIDE_WINDOW)
                return False
            if decision.action == "wait":
                until = decision.until.timestamp()
                self.journal.postpone(row.row, until, decision.reason, now)
                self._next_due = until if self._next_due is None else min(self._next_due, until)
                return False
            if decision.scheduled_for:
                call = dataclasses.replace(call, scheduled_for=decision.scheduled_for)
        while not self.stopping:
            while loop.time() < self._paused_until and not self.stopping:
                await self._sleep(self._paused_until - loop.time())
            permit = await self.pacer.acquire()
            if loop.time() >= self._paused_until and not self.stopping:
                break  # a pause that began while this worker waited for the pacer is honoured too
            permit.sent()  # unused: counted as sent, which only errs on the safe side
        if self.stopping:
            return False  # not sent: the row stays as the journal has it
        now = self.wall_clock()
        if not self.journal.claim(row.row, call.idempotency_key, now, attempts=row.attempts):
            permit.sent()
            return False  # a stale copy: the row was sent or settled since it was read
        try:
            await self._committed()  # sent even if the run stops meanwhile: the journal says sending
            self.result.sent += 1
            outcome = await self.provider.place(session, call, on_sent=permit.sent)
        finally:
            permit.sent()  # if it never got as far as sending its headers
        return self._record(row, outcome, first_sent=now if row.first_sent is None else row.first_sent)

    def _record(self, row: PendingRow, outcome: Outcome, *, first_sent: float) -> bool:
        """Act on ``outcome``; return True if the row was put back to be retried later."""
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
            return self._retry_or_finish(row, outcome, attempts, first_sent, now)
        return False

    def _retry_or_finish(self, row: PendingRow, outcome: Outcome, attempts: int, first_sent: float,
                         now: float) -> bool:
        delay = self.retry.delay(outcome, attempts, replay_safe=self.provider.replay_safe, age=now - first_sent)
        if delay is None and outcome.kind is Kind.RETRY_SAFE and outcome.account_wide and attempts < self.retry.max_attempts:
            self.journal.mark_pending(row.row, outcome.message, now)  # the account is throttled for too long
            self.result.fatal = self.result.fatal or (
                f"the provider asks to wait {outcome.retry_after:.0f} s before any new call ({outcome.message}); "
                "run the same command again later")
            self.stop()
            return False
        in_doubt = row.in_doubt or outcome.kind is Kind.AMBIGUOUS
        if delay is None:
            tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
            if outcome.kind is Kind.AMBIGUOUS:
                self._finish(row, Status.UNKNOWN, error=outcome.message, now=now)
            elif in_doubt:
                self._finish(row, Status.UNKNOWN, error=f"gave up after {tries}: {outcome.message}; "
                                                        "an earlier request may have created the call", now=now)
            else:  # nothing was created: a later run tries again
                self.journal.mark_pending(row.row, outcome.message, now)
                self.journal.defer(row.row, Status.FAILED, f"gave up after {tries}: {outcome.message}; "
                                                           "nothing was created, a re-run tries again", now)
                self._count(Status.FAILED)
            return False
        if outcome.kind is Kind.RETRY_SAFE:
            self.journal.mark_pending(row.row, outcome.message, now)
        loop_now = asyncio.get_running_loop().time()
        if outcome.account_wide:
            self._paused_until = max(self._paused_until, loop_now + delay)
        self.result.retries += 1
        heapq.heappush(self._retries, _Retry(loop_now + delay, next(self._order),
                                             PendingRow(row.row, row.e164, attempts, first_sent, in_doubt)))
        return True

    def _may_act_on(self, copy: PendingRow) -> bool:
        """Whether a pass's copy of a row may be acted upon: a pass reads ahead, so the row may have
        been sent or settled since. The claim refuses a stale copy before a request; a copy that
        could be acted upon without a claim (in doubt, or outside its window) is checked first."""
        return not (copy.in_doubt or self.window is not None) or self.journal.is_current(copy)

    def _may_replay(self, row: PendingRow) -> bool:
        """Whether re-sending a row that may already have been called is harmless now."""
        age = self.wall_clock() - (row.first_sent or 0.0)
        return self.retry.may_replay(age, replay_safe=self.provider.replay_safe)

    def _finish(self, row: PendingRow, status: str, *, call_id: str = "", error: str = "", now: float) -> None:
        self.journal.finish(row.row, status, call_id=call_id, error=error, now=now)
        self._count(status)

    def _count(self, status: str) -> None:
        self.result.statuses[status] += 1
        self.on_progress(self.result)

    async def _committed(self) -> None:
        """Wait until the journal has committed what was recorded so far; the commit runs once, at
        the next turn of the event loop, for every worker that waits for it in this one."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._commit_now)
        waiter = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _commit_now(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self.journal.commit()
        except Exception as error:  # every worker waiting for it raises it
            for waiter in waiting:
                if not waiter.cancelled():
                    waiter.set_exception(error)
        else:
            for waiter in waiting:
                if not waiter.cancelled():
                    waiter.set_result(None)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run is stopped."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass
