"""The dispatcher, end to end minus HTTP: a real CSV, plan and journal, a scripted fake provider.

Everything runs on a virtual clock (``tests/virtual_clock.py``): latency, pacing, Retry-After
and backoff take no real time, and every time stamp the fake provider records is exact.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dialer.contacts import load_contacts
from dialer.dispatch import CallFactory, Dispatcher, DispatchResult, idempotency_key
from dialer.journal import Journal, PendingRow
from dialer.pacing import Pacer
from dialer.parameters import ParameterMap
from dialer.plan import plan_contacts
from dialer.providers.base import Call, Kind, Outcome, Provider
from dialer.retry import RetryPolicy
from virtual_clock import run_virtual

CAMPAIGN, AGENT = "spring-campaign", 7
EPOCH = 1_700_000_000.0  # the fake wall clock is EPOCH + virtual time
SEED = 99

CREATED = None  # in a script: the default answer, created with call id ``call-<row>``
UNAVAILABLE = Outcome(Kind.RETRY_SAFE, "provider unavailable (503)")
LOST = Outcome(Kind.AMBIGUOUS, "no answer in time after the request was sent")
ALREADY = Outcome(Kind.ALREADY_CREATED, "the provider already had this call (idempotency key used before); "
                                        "it did not return its id")
BAD_KEY = Outcome(Kind.FATAL, "the provider refused the API key (401); check DIALER_API_KEY")


def account_429(retry_after: float | None) -> Outcome:
    return Outcome(Kind.RETRY_SAFE, "rate limit exceeded", retry_after=retry_after, account_wide=True)


def number_429(retry_after: float | None) -> Outcome:
    return Outcome(Kind.RETRY_SAFE, "rate limit exceeded for this number", retry_after=retry_after)


def phone(n: int) -> str:
    """Distinct valid US numbers, as a person would type them, and their E.164 form."""
    return f"(415) 555-{n:04d}"


def e164(n: int) -> str:
    return f"+1415555{n:04d}"


# --- the fake provider -----------------------------------------------------------------------


@dataclass
class Received:
    """One request as the provider saw it."""

    call: Call
    at: float                     # virtual time it arrived
    in_flight: int                # requests in flight at the provider, this one included
    tasks: int                    # asyncio tasks alive on the loop at that moment
    answered: float | None = None
    outcome: Outcome | None = None


class FakeProvider(Provider):
    """Answers after ``latency`` virtual seconds with a scripted outcome per number and attempt.

    ``script[e164]`` lists the answers to that number's 1st, 2nd, ... request (the last one
    repeats; ``CREATED`` means created). Numbers not in the script are created at once.
    """

    name = "fake"
    default_base_url = None
    replay_safe = False

    def __init__(self, script: Mapping[str, Sequence[Outcome | None]] | None = None, *,
                 latency: float | Callable[[Call], float] = 0.1, replay_safe: bool = False) -> None:
        super().__init__(base_url="http://fake.invalid", api_key="not-used", agent_id=AGENT)
        self.replay_safe = replay_safe  # type: ignore[misc]
        self.script = dict(script or {})
        self.latency = latency
        self.received: list[Received] = []
        self.on_request: Callable[[Received], None] = lambda request: None
        self._in_flight = 0
        self._attempts: Counter[str] = Counter()

    def request(self, call: Call) -> tuple[str, dict[str, Any]]:
        raise AssertionError("the fake provider sends nothing over HTTP")

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Outcome:
        raise AssertionError("the fake provider sends nothing over HTTP")

    async def place(self, session: Any, call: Call, *, on_sent: Callable[[], None] | None = None) -> Outcome:
        loop = asyncio.get_running_loop()
        if on_sent is not None:
            on_sent()  # the request leaves as it is received: no network in between
        self._in_flight += 1
        request = Received(call, loop.time(), self._in_flight, len(asyncio.all_tasks()))
        self.received.append(request)
        attempt = self._attempts[call.phone]
        self._attempts[call.phone] += 1
        self.on_request(request)
        try:
            await asyncio.sleep(self.latency(call) if callable(self.latency) else self.latency)
        finally:
            self._in_flight -= 1
        answers = self.script.get(call.phone, [CREATED])
        outcome = answers[min(attempt, len(answers) - 1)]
        if outcome is CREATED:
            outcome = Outcome(Kind.CREATED, call_id=f"call-{call.row}", status="initiated")
        request.answered, request.outcome = loop.time(), outcome
        return outcome

    def times(self) -> list[float]:
        return [request.at for request in self.received]

    def to(self, number: str) -> list[Received]:
        return [request for request in self.received if request.call.phone == number]


# --- a real contacts file, plan and journal ----------------------------------------------------


@dataclass
class Setup:
    journal: Journal
    make_call: CallFactory


@pytest.fixture
def campaign(write_csv, tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """``campaign(rows)``: write ``[["Name", "Phone"], *rows]``, plan it, fill a new journal."""
    journals: list[Journal] = []

    def build(rows: list[list[str]]) -> Setup:
        contacts = load_contacts(write_csv([["Name", "Phone"], *rows]))
        journal = Journal.open(tmp_path / "report.csv.journal", "fingerprint")
        assert journal.is_new
        journal.create(plan_contacts(contacts, "US"), "fingerprint")
        journals.append(journal)
        return Setup(journal, CallFactory(contacts, campaign_id=CAMPAIGN, agent_id=AGENT))

    yield build
    for journal in journals:
        journal.close()


def numbered(count: int) -> list[list[str]]:
    return [[f"Person {n}", phone(n)] for n in range(count)]


def dispatch(setup: Setup, provider: FakeProvider, *, rate: float | None = None, concurrency: int = 4,
             retry: RetryPolicy | None = None,
             during: Callable[[Dispatcher], Awaitable[None]] | None = None) -> DispatchResult:
    """Run a Dispatcher to the end on a virtual clock; ``during(dispatcher)`` runs beside it."""

    async def main() -> DispatchResult:
        loop = asyncio.get_running_loop()
        dispatcher = Dispatcher(provider, setup.journal, setup.make_call, pacer=Pacer(rate),
                                retry=retry or RetryPolicy(rng=random.Random(SEED)),
                                concurrency=concurrency, wall_clock=lambda: EPOCH + loop.time())
        side = asyncio.ensure_future(during(dispatcher)) if during else None
        result = await dispatcher.run(None)  # type: ignore[arg-type]  # the fake needs no session
        if side is not None:
            side.cancel()
        return result

    return run_virtual(main)


def results(setup: Setup) -> list[tuple[str, str, str, str]]:
    """Per row: (status, call_id, attempts, error)."""
    columns = setup.journal.results()
    return list(zip(columns["status"].tolist(), columns["call_id"].tolist(),
                    columns["attempts"].tolist(), columns["error"].tolist()))


def statuses(setup: Setup) -> list[str]:
    return setup.journal.results()["status"].tolist()


# --- every row once ----------------------------------------------------------------------------


def test_every_ready_row_is_sent_exactly_once_and_ends_initiated(campaign):
    setup = campaign([["Ana", phone(0)], ["Ben", "n/a"], ["Cy", phone(1)], ["Di", "+1 415 555 0000"],
                      ["", phone(2)], ["Fi", ""], ["Gus", phone(3)]])
    provider = FakeProvider()
    result = dispatch(setup, provider)
    assert sorted(request.call.phone for request in provider.received) == [e164(0), e164(1), e164(2), e164(3)]
    assert results(setup) == [
        ("initiated", "call-0", "1", ""),
        ("invalid", "", "0", "not a phone number"),
        ("initiated", "call-2", "1", ""),
        ("duplicate", "", "0", "same number as row 2"),
        ("initiated", "call-4", "1", ""),
        ("invalid", "", "0", "empty"),
        ("initiated", "call-6", "1", ""),
    ]
    assert (result.sent, result.retries, dict(result.statuses)) == (4, 0, {"initiated": 4})
    assert (result.fatal, result.interrupted) == (None, False)


def test_each_call_carries_its_other_cells_and_a_stable_idempotency_key(campaign):
    setup = campaign([["Ana", phone(0)], ["", phone(1)]])
    provider = FakeProvider()
    dispatch(setup, provider)
    calls = sorted((request.call for request in provider.received), key=lambda call: call.row)
    assert calls == [
        Call(0, e164(0), (("name", "Ana"),), idempotency_key(CAMPAIGN, AGENT, e164(0))),
        Call(1, e164(1), (), idempotency_key(CAMPAIGN, AGENT, e164(1))),
    ]


def test_idempotency_keys_are_the_same_in_every_version():
    # A journal made by an earlier version is resumed with keys computed now: they must not change.
    assert idempotency_key("spring-2026", 7, "+14155552671") == "17443ea4-a53f-5cf5-8cc5-94a9f511ac87"


def test_calls_are_built_from_the_right_cells_in_any_order(campaign):
    setup = campaign(numbered(5000))  # several blocks of cells, read in file order and out of it
    for row in [0, 4999, 1, 1024, 1023, 3000, 2048, 4096, 5, 4998, 2047, 0]:
        call = setup.make_call(PendingRow(row, e164(row), 0, None))
        assert (call.fields, call.idempotency_key) == ((("name", f"Person {row}"),),
                                                       idempotency_key(CAMPAIGN, AGENT, e164(row)))


def test_only_the_cells_calls_use_are_read(write_csv):
    contacts = load_contacts(write_csv([["Name", "Phone", "Notes", "TZ"], ["Ana", phone(0), "private", "Europe/Paris"]]))
    factory = CallFactory(contacts, campaign_id=CAMPAIGN, agent_id=AGENT, zone_column="TZ",
                          parameters=ParameterMap(columns={"Name": "name"}, include_other_columns=False))
    assert (factory.cells(0), factory.zone_cell(0)) == ({0: "Ana", 3: "Europe/Paris"}, "Europe/Paris")


def test_calls_from_a_wide_file_carry_every_cell_in_any_order(write_csv):
    header = ["Phone"] + [f"C{c}" for c in range(3000)]  # a few rows per block of cells
    contacts = load_contacts(write_csv([header] + [[phone(r)] + [f"{r}-{c}" for c in range(3000)] for r in range(40)]))
    factory = CallFactory(contacts, campaign_id=CAMPAIGN, agent_id=AGENT)
    for row in [0, 39, 1, 21, 20, 22, 5, 38, 0, 30, 10, 2]:
        fields = factory(PendingRow(row, e164(row), 0, None)).fields
        assert fields == tuple((f"c{c}", f"{row}-{c}") for c in range(3000))


def test_a_request_leaves_only_once_its_row_is_committed_as_sending(campaign):
    setup = campaign(numbered(20))
    provider = FakeProvider()
    on_disk = sqlite3.connect(setup.journal.path)  # what a kill -9 would leave
    seen: list[tuple[str, int]] = []
    provider.on_request = lambda request: seen.append(on_disk.execute(
        "SELECT state, attempts FROM rows WHERE row = ?", (request.call.row,)).fetchone())
    dispatch(setup, provider, concurrency=4)
    on_disk.close()
    assert seen == [("sending", 1)] * 20


def test_claims_made_in_the_same_turn_share_one_commit(campaign):
    setup = campaign(numbered(8))
    provider = FakeProvider()
    commits = 0
    commit = setup.journal.commit

    def counting_commit() -> None:
        nonlocal commits
        commits += setup.journal._db.in_transaction
        commit()

    setup.journal.commit = counting_commit  # type: ignore[method-assign]
    commits_before_request: list[int] = []
    provider.on_request = lambda request: commits_before_request.append(commits)
    dispatch(setup, provider, concurrency=8)  # the 8 workers claim their rows in the first turn
    assert commits_before_request == [1] * 8


def test_a_resumed_run_sends_nothing_already_done(campaign):
    setup = campaign(numbered(6))
    dispatch(setup, FakeProvider())
    again = FakeProvider()
    result = dispatch(setup, again)
    assert (again.received, result.sent) == ([], 0)


# --- concurrency and pacing --------------------------------------------------------------------


def test_never_more_than_concurrency_requests_in_flight(campaign):
    setup = campaign(numbered(60))
    provider = FakeProvider(latency=lambda call: 0.1 + (call.row % 7) * 0.03)
    dispatch(setup, provider, concurrency=5)
    assert len(provider.received) == 60
    assert max(request.in_flight for request in provider.received) == 5


def test_pacing_holds_at_the_provider(campaign):
    # 32 workers x 1 request per 0.2 s could do 160/s: only the pacer holds them to 100/s.
    # (16 workers at 0.2 s latency top out at 80/s, below the rate under test.)
    setup = campaign(numbered(500))
    provider = FakeProvider(latency=0.2)
    dispatch(setup, provider, rate=100, concurrency=32)
    times = provider.times()
    assert len(times) == 500
    worst = max(bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert worst <= 100
    assert (len(times) - 1) / (times[-1] - times[0]) >= 98


# --- retries -----------------------------------------------------------------------------------


def test_retry_safe_answer_is_retried_and_the_row_ends_initiated(campaign):
    setup = campaign(numbered(5))
    provider = FakeProvider({e164(2): [UNAVAILABLE, CREATED]})
    result = dispatch(setup, provider)
    assert [request.call.idempotency_key for request in provider.to(e164(2))] == \
        [idempotency_key(CAMPAIGN, AGENT, e164(2))] * 2
    assert results(setup)[2] == ("initiated", "call-2", "2", "")
    assert statuses(setup) == ["initiated"] * 5
    assert (result.sent, result.retries) == (6, 1)


def test_retry_waits_the_policys_backoff(campaign):
    setup = campaign(numbered(1))
    provider = FakeProvider({e164(0): [UNAVAILABLE, CREATED]})
    dispatch(setup, provider)
    first, second = provider.to(e164(0))
    assert second.at == pytest.approx(first.answered + random.Random(SEED).uniform(0, 0.5), abs=1e-5)


def test_retry_safe_gives_up_after_max_attempts_and_nothing_else_changes(campaign):
    setup = campaign(numbered(5))
    provider = FakeProvider({e164(1): [UNAVAILABLE]})
    result = dispatch(setup, provider, retry=RetryPolicy(max_attempts=3, rng=random.Random(SEED)))
    assert len(provider.to(e164(1))) == 3
    assert results(setup) == [
        ("initiated", "call-0", "1", ""),
        ("failed", "", "3", "gave up after 3 attempts: provider unavailable (503); "
                            "nothing was created, a re-run tries again"),
        ("initiated", "call-2", "1", ""),
        ("initiated", "call-3", "1", ""),
        ("initiated", "call-4", "1", ""),
    ]
    assert (result.sent, result.retries, dict(result.statuses)) == (7, 2, {"initiated": 4, "failed": 1})


def test_ambiguous_is_replayed_with_the_same_key_on_a_replay_safe_provider(campaign):
    setup = campaign(numbered(3))
    provider = FakeProvider({e164(1): [LOST, ALREADY]}, replay_safe=True)
    dispatch(setup, provider)
    keys = [request.call.idempotency_key for request in provider.to(e164(1))]
    assert keys == [idempotency_key(CAMPAIGN, AGENT, e164(1))] * 2
    assert results(setup)[1] == ("initiated", "", "2", ALREADY.message)


def test_ambiguous_is_never_resent_on_a_provider_without_replay_safety(campaign):
    setup = campaign(numbered(3))
    provider = FakeProvider({e164(1): [LOST, CREATED]}, replay_safe=False)
    result = dispatch(setup, provider)
    assert len(provider.to(e164(1))) == 1
    assert results(setup)[1] == ("unknown", "", "1", LOST.message)
    assert (result.sent, result.retries) == (3, 0)


def test_ambiguous_is_not_replayed_once_the_key_may_be_forgotten(campaign):
    # The first request left 0.1 s before its answer: older than a 0.05 s replay window.
    setup = campaign(numbered(1))
    provider = FakeProvider({e164(0): [LOST, CREATED]}, replay_safe=True, latency=0.1)
    dispatch(setup, provider, retry=RetryPolicy(replay_window=0.05, rng=random.Random(SEED)))
    assert len(provider.to(e164(0))) == 1
    assert results(setup)[0] == ("unknown", "", "1", LOST.message)


# --- rate limits -------------------------------------------------------------------------------


def test_account_wide_429_pauses_every_worker_for_its_retry_after(campaign):
    setup = campaign(numbered(20))
    provider = FakeProvider({e164(2): [account_429(2.0), CREATED]}, latency=0.1)
    dispatch(setup, provider, concurrency=4)
    limited = provider.to(e164(2))[0]
    resumed = [request.at for request in provider.received if request.at > limited.answered]
    assert limited.answered == pytest.approx(0.1)
    assert min(resumed) == pytest.approx(limited.answered + 2.0, abs=1e-5)
    assert results(setup)[2] == ("initiated", "call-2", "2", "")
    assert statuses(setup) == ["initiated"] * 20


def test_account_wide_429_also_holds_workers_queued_in_the_pacer(campaign):
    # 5/s with 4 workers: when the 429 arrives the other 3 workers are waiting for the pacer.
    setup = campaign(numbered(20))
    provider = FakeProvider({e164(0): [account_429(2.0), CREATED]}, latency=0.05)
    dispatch(setup, provider, rate=5, concurrency=4)
    limited = provider.to(e164(0))[0]
    during_pause = [request.at for request in provider.received
                    if limited.answered < request.at < limited.answered + 2.0 - 1e-6]
    assert during_pause == []


def test_account_wide_429_beyond_max_wait_sends_nothing_more_during_its_retry_after(campaign):
    setup = campaign(numbered(10))
    provider = FakeProvider({e164(n): [account_429(3600.0), CREATED] for n in range(10)}, latency=0.1)
    dispatch(setup, provider, concurrency=2, retry=RetryPolicy(max_wait=600.0, rng=random.Random(SEED)))
    first_answer = min(request.answered for request in provider.received)
    assert [request.at for request in provider.received if request.at >= first_answer] == []


def test_per_number_429_delays_only_that_row(campaign):
    setup = campaign(numbered(30))
    provider = FakeProvider({e164(0): [number_429(5.0), CREATED]}, latency=0.5)
    dispatch(setup, provider, concurrency=2)
    limited = provider.to(e164(0))[0]
    assert limited.answered == 0.5
    meanwhile = [request for request in provider.received if 0.5 <= request.at < 5.5]
    assert len(meanwhile) == 20  # 2 workers x 10 round trips of 0.5 s
    retried = provider.to(e164(0))[1]
    assert 5.5 - 1e-5 <= retried.at <= 6.0 + 1e-5  # due at 5.5, taken by the next free worker
    assert results(setup)[0] == ("initiated", "call-0", "2", "")


def test_an_idle_worker_sleeps_until_there_is_something_to_do(campaign):
    # Row 2 waited for its calling window earlier (its not_before is now past). Row 0 gets an
    # account-wide 429: whichever worker takes row 2 holds it, still pending, through the 2 s
    # pause; the other worker has nothing to do but wait for row 0's retry.
    setup = campaign(numbered(3))
    setup.journal.postpone(2, EPOCH - 60, "outside the calling window", EPOCH - 3600)
    provider = FakeProvider({e164(0): [account_429(2.0), CREATED]}, latency=0.1)
    naps = 0

    async def watch(dispatcher: Dispatcher) -> None:
        sleep = dispatcher._sleep

        async def counting_sleep(seconds: float) -> None:
            nonlocal naps
            naps += 1
            if naps == 1000:
                dispatcher.stop()  # it is spinning: end the run so that the test can say so
            await sleep(seconds)
        dispatcher._sleep = counting_sleep  # type: ignore[method-assign]

    dispatch(setup, provider, concurrency=2, during=watch)
    assert naps <= 3  # the pause, and the wait for the retry
    assert statuses(setup) == ["initiated"] * 3


# --- stopping ----------------------------------------------------------------------------------


def test_fatal_answer_stops_the_run_and_leaves_unsent_rows_pending(campaign):
    # Row 5 is sent at 0.1 with rows 4, 6, 7, and is answered first (0.15): the others finish at 0.2.
    setup = campaign(numbered(20))
    provider = FakeProvider({e164(5): [BAD_KEY]}, latency=lambda call: 0.05 if call.row == 5 else 0.1)
    result = dispatch(setup, provider, concurrency=4)
    fatal_at = provider.to(e164(5))[0].answered
    assert fatal_at == pytest.approx(0.15)
    assert result.fatal == BAD_KEY.message
    assert [request.at for request in provider.received if request.at >= fatal_at] == []
    assert sorted(request.call.row for request in provider.received) == list(range(8))
    rows = results(setup)
    assert rows[5] == ("not_attempted", "", "1", BAD_KEY.message)
    assert [row[0] for row in rows[:5] + rows[6:8]] == ["initiated"] * 7
    assert rows[8:] == [("not_attempted", "", "0", "")] * 12
    assert result.elapsed == pytest.approx(0.2)  # in-flight requests finished; no grace period wasted


def test_stop_mid_run_lets_in_flight_requests_finish_and_sends_nothing_new(campaign):
    setup = campaign(numbered(20))
    provider = FakeProvider(latency=0.1)
    stopped_at = 0.25

    async def interrupt(dispatcher: Dispatcher) -> None:
        await asyncio.sleep(stopped_at)
        dispatcher.stop(interrupted=True)

    result = dispatch(setup, provider, concurrency=4, during=interrupt)
    assert result.interrupted is True
    assert result.fatal is None
    assert max(provider.times()) < stopped_at
    assert all(request.outcome is not None for request in provider.received)  # none abandoned
    assert results(setup) == [("initiated", f"call-{n}", "1", "") for n in range(12)] + \
        [("not_attempted", "", "0", "")] * 8
    assert result.elapsed == pytest.approx(0.3)


# --- memory ------------------------------------------------------------------------------------


def test_rows_are_read_lazily_and_tasks_stay_proportional_to_concurrency(campaign):
    setup = campaign(numbered(5000))
    concurrency, stop_after = 4, 40
    pulled = 0
    read_pending = setup.journal.pending

    def counting_pending(*args, **kwargs):
        nonlocal pulled
        for row in read_pending(*args, **kwargs):
            pulled += 1
            yield row

    setup.journal.pending = counting_pending  # type: ignore[method-assign]
    provider = FakeProvider(latency=0.01)

    async def stop_early(dispatcher: Dispatcher) -> None:
        def on_request(request: Received) -> None:
            if len(provider.received) == stop_after:
                dispatcher.stop()
        provider.on_request = on_request

    dispatch(setup, provider, concurrency=concurrency, during=stop_early)
    assert len(provider.received) == stop_after
    assert pulled <= stop_after + concurrency  # at most one row taken but not sent per worker
    assert max(request.tasks for request in provider.received) <= 2 * concurrency + 3
    assert setup.journal.count_pending() == 5000 - stop_after
