"""The sandbox answers as shared/reference/assumptions.md says the two providers do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from dialer.sandbox import Sandbox, SandboxConfig, SandboxThread

FORMANT = "/v1/call"
AGENTS = "/api/v1/global/agents/call"
TOKEN = "sandbox-key"
PHONE = "+14155552671"
OTHER_PHONE = "+442079460958"


class FakeClock:
    """The sandbox clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    """An injected sleep that returns at once, records each delay and what the ledger held then."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sandbox: Sandbox | None = None
        self.delays: list[float] = []
        self.ledger_sizes: list[int] = []

    async def __call__(self, seconds: float) -> None:
        assert self.sandbox is not None
        self.delays.append(seconds)
        self.ledger_sizes.append(len(self.sandbox.calls))
        self.clock.now += seconds


class Reply:
    """What the client saw: status, headers and body (parsed JSON when it is JSON)."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    @property
    def body(self) -> Any:
        return json.loads(self.text)


Start = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_sleep(clock: FakeClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
async def start(clock: FakeClock, fake_sleep: FakeSleep) -> AsyncIterator[Start]:
    """Start a sandbox on 127.0.0.1:0 with the fake clock and sleep; stopped after the test."""
    started: list[Sandbox] = []

    async def _start(**config: Any) -> Sandbox:
        sandbox = Sandbox(SandboxConfig(**config), clock=clock, sleep=fake_sleep)
        fake_sleep.sandbox = sandbox
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield _start
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def formant_body(phone: Any = PHONE, agent_id: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent_id,
            "parameters": [{"name": "customer_phone", "value": phone},
                           {"name": "customer_name", "value": "Ana"}],
            **extra}


def agents_body(phone: Any = PHONE, agent_id: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "phone_number": phone, **extra}


def body_for(path: str, phone: str = PHONE, **extra: Any) -> dict[str, Any]:
    return formant_body(phone, **extra) if path == FORMANT else agents_body(phone, **extra)


def in_days(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


async def post(session: aiohttp.ClientSession, sandbox: Sandbox, path: str, body: Any,
               auth: str | None = f"Bearer {TOKEN}") -> Reply:
    """POST ``body`` (JSON, or raw bytes when given bytes) with ``Authorization: auth``."""
    headers = {} if auth is None else {"Authorization": auth}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with session.post(sandbox.url + path, headers=headers, **kwargs) as response:
        return Reply(response.status, dict(response.headers), await response.text())


async def get(session: aiohttp.ClientSession, sandbox: Sandbox, path: str) -> Any:
    async with session.get(sandbox.url + path) as response:
        assert response.status == 200
        return await response.json()


def formant_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def is_uuid4(text: str) -> bool:
    return str(uuid.UUID(text, version=4)) == text


# --- success -------------------------------------------------------------------------------------

async def test_formant_call_is_initiated(start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start()
    reply = await post(session, sandbox, FORMANT, formant_body())
    assert reply.status == 200
    data = reply.body["data"]
    assert is_uuid4(data.pop("trace_id"))
    assert data == {"agent_id": 1, "conversation_id": None, "scheduled_for": None,
                    "status": "initiated"}


async def test_formant_call_with_scheduled_for_is_scheduled(
        start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start()
    when = in_days(2)
    reply = await post(session, sandbox, FORMANT,
                       formant_body(scheduled_for=when, conversation_id="conv-7"))
    assert reply.status == 200
    data = reply.body["data"]
    assert is_uuid4(data.pop("trace_id"))
    assert data == {"agent_id": 1, "conversation_id": "conv-7", "scheduled_for": when,
                    "status": "scheduled"}


async def test_agents_call_is_initiated(start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start()
    reply = await post(session, sandbox, AGENTS, agents_body(metadata={"row": 3}))
    assert reply.status == 200
    body = reply.body
    assert is_uuid4(body.pop("execution_id"))
    assert body == {"agent_id": 1, "phone_number": PHONE, "call_status": "initiated"}


async def test_ledger_records_each_created_call_in_order(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock) -> None:
    sandbox = await start()
    clock.now = 5.0
    formant = await post(session, sandbox, FORMANT,
                         formant_body(idempotency_key="k-1", metadata='{"row": 2}',
                                      retry_context={"retry_stage_id": "s1"}))
    clock.now = 6.5
    agents = await post(session, sandbox, AGENTS, agents_body(OTHER_PHONE, metadata={"row": 3}))
    ledger = await get(session, sandbox, "/_calls")
    assert ledger == [
        {"id": formant.body["data"]["trace_id"], "api": "formant", "agent_id": 1, "phone": PHONE,
         "parameters": formant_body()["parameters"], "metadata": '{"row": 2}',
         "idempotency_key": "k-1", "conversation_id": None,
         "retry_context": {"retry_stage_id": "s1"}, "scheduled_for": None, "at": 5.0},
        {"id": agents.body["execution_id"], "api": "agents", "agent_id": 1, "phone": OTHER_PHONE,
         "parameters": None, "metadata": {"row": 3}, "idempotency_key": None,
         "conversation_id": None, "retry_context": None, "scheduled_for": None, "at": 6.5},
    ]
    assert sandbox.calls == ledger


# --- errors: nothing is created ------------------------------------------------------------------

UNAUTHORIZED = formant_error("unauthorized", "invalid API key")
INVALID = "validation_error"

FORMANT_ERRORS = [
    pytest.param(None, formant_body(), 401, UNAUTHORIZED, id="no-key"),
    pytest.param("Bearer wrong-key", formant_body(), 401, UNAUTHORIZED, id="wrong-key"),
    pytest.param(TOKEN, formant_body(), 401, UNAUTHORIZED, id="no-bearer-prefix"),
    pytest.param(f"bearer {TOKEN}", formant_body(), 401, UNAUTHORIZED, id="lowercase-bearer"),
    pytest.param(..., formant_body(agent_id=99), 404,
                 formant_error("agent_not_found", "agent not found"), id="unknown-agent"),
    pytest.param(..., formant_body(agent_id=2), 422,
                 formant_error(INVALID, "agent has no phone number configured"),
                 id="agent-without-number"),
    pytest.param(..., {"agent_id": 1, "parameters": [{"name": "customer_name", "value": "Ana"}]},
                 422, formant_error(INVALID, "customer_phone parameter is required"),
                 id="no-customer-phone"),
    pytest.param(..., formant_body(None), 422,
                 formant_error(INVALID, "customer_phone parameter is required"),
                 id="null-customer-phone"),
    *[pytest.param(..., formant_body(phone), 422,
                   formant_error(INVALID, "customer_phone must be an E.164 number"),
                   id=f"phone-{label}")
      for label, phone in [("no-plus", "14155552671"), ("letters", "+1415555CALL"),
                           ("too-short", "+12345"), ("too-long", "+1234567890123456"),
                           ("leading-zero", "+04155552671"), ("spaces", "+1 415 555 2671"),
                           ("trailing-newline", PHONE + "\n"),
                           ("arabic-digits", "+١٤١٥٥٥٥٢٦٧١"), ("number", 14155552671)]],
    *[pytest.param(..., {"agent_id": 1, "parameters": parameters}, 422,
                   formant_error(INVALID, "parameters must be a list of {name, value} objects"),
                   id=f"parameters-{label}")
      for label, parameters in [("missing", None), ("object", {"customer_phone": PHONE}),
                                ("strings", ["customer_phone"]),
                                ("no-value", [{"name": "customer_phone"}]),
                                ("no-name", [{"value": PHONE}])]],
    *[pytest.param(..., formant_body(agent_id=agent_id), 422,
                   formant_error(INVALID, "agent_id must be an integer"), id=f"agent-id-{label}")
      for label, agent_id in [("string", "1"), ("float", 1.5), ("bool", True), ("null", None)]],
    pytest.param(..., b"{not json", 422,
                 formant_error(INVALID, "request body must be a JSON object"), id="bad-json"),
    pytest.param(..., [formant_body()], 422,
                 formant_error(INVALID, "request body must be a JSON object"), id="json-array"),
    pytest.param(..., formant_body(metadata={"row": 2}), 422,
                 formant_error(INVALID, "metadata must be a string"), id="metadata-object"),
    pytest.param(..., formant_body(retry_context="again"), 422,
                 formant_error(INVALID, "retry_context must be an object"),
                 id="retry-context-string"),
    pytest.param(..., formant_body(conversation_id=7), 422,
                 formant_error(INVALID, "conversation_id must be a string"),
                 id="conversation-id-number"),
    pytest.param(..., formant_body(idempotency_key=7), 422,
                 formant_error(INVALID, "idempotency_key must be a string"),
                 id="idempotency-key-number"),
    pytest.param(..., formant_body(scheduled_for="next tuesday"), 422,
                 formant_error(INVALID, "scheduled_for must be an ISO 8601 datetime"),
                 id="scheduled-not-iso"),
    pytest.param(..., formant_body(scheduled_for=in_days(-1)), 422,
                 formant_error(INVALID, "scheduled_for must be in the future and within 30 days"),
                 id="scheduled-in-past"),
    pytest.param(..., formant_body(scheduled_for=in_days(31)), 422,
                 formant_error(INVALID, "scheduled_for must be in the future and within 30 days"),
                 id="scheduled-beyond-30-days"),
]


@pytest.mark.parametrize(("auth", "body", "status", "expected"), FORMANT_ERRORS)
async def test_formant_error(start: Start, session: aiohttp.ClientSession, auth: Any, body: Any,
                             status: int, expected: dict[str, Any]) -> None:
    sandbox = await start()
    reply = await post(session, sandbox, FORMANT, body,
                       **({} if auth is ... else {"auth": auth}))
    assert (reply.status, reply.body) == (status, expected)
    assert sandbox.calls == []


AGENTS_ERRORS = [
    pytest.param(None, agents_body(), 401, "Invalid token", id="no-key"),
    pytest.param("Bearer wrong-key", agents_body(), 401, "Invalid token", id="wrong-key"),
    pytest.param(TOKEN, agents_body(), 401, "Invalid token", id="no-bearer-prefix"),
    pytest.param(..., {"agent_id": 1}, 400, "Phone Number is required", id="no-phone"),
    pytest.param(..., agents_body(None), 400, "Phone Number is required", id="null-phone"),
    pytest.param(..., agents_body(""), 400, "Phone Number is required", id="empty-phone"),
    pytest.param(..., agents_body(agent_id=99), 404, "Agent not found or not active",
                 id="unknown-agent"),
    pytest.param(..., agents_body(agent_id=2), 404, "Agent not found or not active",
                 id="agent-without-number"),
    *[pytest.param(..., agents_body(phone), 422, "Invalid phone number format", id=f"phone-{label}")
      for label, phone in [("no-plus", "14155552671"), ("letters", "+1415555CALL"),
                           ("too-short", "+12345"), ("trailing-newline", PHONE + "\n"),
                           ("number", 14155552671)]],
    pytest.param(..., agents_body(metadata='{"row": 3}'), 422, "metadata must be an object",
                 id="metadata-string"),
    pytest.param(..., agents_body(agent_id="1"), 422, "agent_id must be an integer",
                 id="agent-id-string"),
    pytest.param(..., b"{not json", 422, "request body must be a JSON object", id="bad-json"),
]


@pytest.mark.parametrize(("auth", "body", "status", "detail"), AGENTS_ERRORS)
async def test_agents_error(start: Start, session: aiohttp.ClientSession, auth: Any, body: Any,
                            status: int, detail: str) -> None:
    sandbox = await start()
    reply = await post(session, sandbox, AGENTS, body, **({} if auth is ... else {"auth": auth}))
    assert (reply.status, reply.body) == (status, {"detail": detail})
    assert sandbox.calls == []


async def test_key_is_never_echoed(start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start(token="s3cret-token")
    texts = [(await post(session, sandbox, path, body_for(path), auth=auth)).text
             for path in (FORMANT, AGENTS) for auth in ("Bearer s3cret-token", "Bearer wr0ng")]
    texts += [json.dumps(await get(session, sandbox, path)) for path in ("/_calls", "/_stats")]
    assert not [text for text in texts if "s3cret" in text or "wr0ng" in text]


# --- idempotency ---------------------------------------------------------------------------------

async def test_repeated_idempotency_key_is_409_and_creates_one_call(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock) -> None:
    sandbox = await start()
    first = await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    clock.now = 23 * 3600.0
    again = await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    assert first.status == 200
    assert (again.status, again.body) == (
        409, formant_error("idempotency_key_used", "idempotency key already used"))
    assert [call["id"] for call in sandbox.calls] == [first.body["data"]["trace_id"]]


async def test_idempotency_key_expires_after_24_hours(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock) -> None:
    sandbox = await start()
    await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    clock.now = 24 * 3600.0
    again = await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    assert again.status == 200
    assert len(sandbox.calls) == 2


# --- rate limits ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    (FORMANT, formant_error("rate_limited", "rate limit exceeded for this number")),
    (AGENTS, {"detail": "Rate limit exceeded"}),
])
@pytest.mark.parametrize(("elapsed", "retry_after"), [(0.0, "10"), (2.5, "8"), (9.75, "1")])
async def test_number_called_too_soon_is_429_with_retry_after(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock, path: str,
        expected: dict[str, Any], elapsed: float, retry_after: str) -> None:
    sandbox = await start(per_number=10.0)
    await post(session, sandbox, path, body_for(path))
    clock.now = elapsed
    reply = await post(session, sandbox, path, body_for(path))
    assert (reply.status, reply.body, reply.headers["Retry-After"]) == (429, expected, retry_after)
    assert len(sandbox.calls) == 1


@pytest.mark.parametrize("path", [FORMANT, AGENTS])
async def test_number_can_be_called_again_once_per_number_has_passed(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock, path: str) -> None:
    sandbox = await start(per_number=10.0)
    await post(session, sandbox, path, body_for(path))
    other = await post(session, sandbox, path, body_for(path, OTHER_PHONE))
    clock.now = 10.0
    again = await post(session, sandbox, path, body_for(path))
    assert (other.status, again.status) == (200, 200)
    assert len(sandbox.calls) == 3


async def test_per_number_limit_is_kept_per_api(
        start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start(per_number=10.0)
    statuses = [(await post(session, sandbox, path, body_for(path))).status
                for path in (FORMANT, AGENTS)]
    assert statuses == [200, 200]


@pytest.mark.parametrize(("path", "expected"), [
    (FORMANT, formant_error("rate_limited", "rate limit exceeded")),
    (AGENTS, {"detail": "Rate limit exceeded"}),
])
async def test_account_rate_exceeded_is_429_with_retry_after(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock, path: str,
        expected: dict[str, Any]) -> None:
    sandbox = await start(rate=2)
    phones = ["+14155550001", "+14155550002", "+14155550003"]
    replies = [await post(session, sandbox, path, body_for(path, phone)) for phone in phones]
    assert [reply.status for reply in replies] == [200, 200, 429]
    assert (replies[2].body, replies[2].headers["Retry-After"]) == (expected, "1")
    assert [call["phone"] for call in sandbox.calls] == phones[:2]


async def test_account_rate_window_slides(
        start: Start, session: aiohttp.ClientSession, clock: FakeClock) -> None:
    sandbox = await start(rate=2)
    statuses = []
    for now, phone in [(0.0, "+14155550001"), (0.5, "+14155550002"), (0.75, "+14155550003"),
                       (1.0, "+14155550004"), (1.5, "+14155550005")]:
        clock.now = now
        statuses.append((await post(session, sandbox, FORMANT, formant_body(phone))).status)
    # At 1.0 the arrival at 0.0 has left the window; at 1.5 the 429 at 0.75 is still in it.
    assert statuses == [200, 200, 429, 429, 429]


async def test_rejected_requests_count_toward_the_rate(
        start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start(rate=2)
    await post(session, sandbox, FORMANT, formant_body(), auth="Bearer wrong")
    await post(session, sandbox, FORMANT, formant_body(agent_id=99))
    reply = await post(session, sandbox, FORMANT, formant_body())
    assert reply.status == 429


# --- faults --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [FORMANT, AGENTS])
async def test_fail_answers_503_with_plain_text(
        start: Start, session: aiohttp.ClientSession, path: str) -> None:
    sandbox = await start(fail=1.0)
    reply = await post(session, sandbox, path, body_for(path))
    assert reply.status == 503
    assert reply.headers["Content-Type"].startswith("text/plain")
    with pytest.raises(ValueError):
        json.loads(reply.text)
    assert sandbox.calls == []


@pytest.mark.parametrize("path", [FORMANT, AGENTS])
async def test_reset_drops_the_connection_and_creates_nothing(
        start: Start, session: aiohttp.ClientSession, path: str) -> None:
    sandbox = await start(reset=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, sandbox, path, body_for(path))
    assert await get(session, sandbox, "/_calls") == []
    assert (await get(session, sandbox, "/_stats"))["faults"] == {"fail": 0, "reset": 1, "lost": 0}


@pytest.mark.parametrize("path", [FORMANT, AGENTS])
async def test_lost_creates_the_call_then_drops_the_connection(
        start: Start, session: aiohttp.ClientSession, path: str) -> None:
    sandbox = await start(lost=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, sandbox, path, body_for(path))
    assert [call["phone"] for call in await get(session, sandbox, "/_calls")] == [PHONE]
    assert (await get(session, sandbox, "/_stats"))["faults"] == {"fail": 0, "reset": 0, "lost": 1}


async def test_lost_call_resent_with_its_key_is_409(
        start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start(lost=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    again = await post(session, sandbox, FORMANT, formant_body(idempotency_key="row-1"))
    assert again.status == 409
    assert len(sandbox.calls) == 1


async def test_delay_creates_first_and_answers_after_the_injected_sleep(
        start: Start, session: aiohttp.ClientSession, fake_sleep: FakeSleep) -> None:
    sandbox = await start(delay=30.0)
    began = time.perf_counter()
    reply = await post(session, sandbox, FORMANT, formant_body())
    assert reply.status == 200
    assert (fake_sleep.delays, fake_sleep.ledger_sizes) == ([30.0], [1])
    assert time.perf_counter() - began < 1.0


async def outcomes(session: aiohttp.ClientSession, seed: int) -> list[int | str]:
    """Statuses of 40 calls to a sandbox with every fault, 'dropped' for a dropped connection."""
    seen: list[int | str] = []
    async with Sandbox(SandboxConfig(fail=0.2, reset=0.2, lost=0.2, seed=seed)) as sandbox:
        for i in range(40):
            try:
                seen.append((await post(session, sandbox, FORMANT,
                                        formant_body(f"+1415555{i:04d}"))).status)
            except aiohttp.ServerDisconnectedError:
                seen.append("dropped")
    return seen


async def test_seeded_faults_are_reproducible(session: aiohttp.ClientSession) -> None:
    first, second, other = (await outcomes(session, 7), await outcomes(session, 7),
                            await outcomes(session, 8))
    assert first == second
    assert {200, 503, "dropped"} <= set(first)
    assert other != first


# --- stats ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("arrivals", "expected"), [
    ([], 0),
    ([5.0], 1),
    ([0.0, 1.0, 2.0, 3.0], 1),
    ([0.0, 0.5, 0.999, 1.0, 1.25, 1.5, 3.0], 4),
    ([0.0, 0.0, 0.0, 10.0, 10.5, 10.75, 10.9, 11.0], 4),
])
async def test_max_requests_per_second(start: Start, session: aiohttp.ClientSession,
                                       clock: FakeClock, arrivals: list[float],
                                       expected: int) -> None:
    sandbox = await start()
    for i, now in enumerate(arrivals):
        clock.now = now
        await post(session, sandbox, FORMANT, formant_body(f"+1415555{i:04d}"))
    stats = await get(session, sandbox, "/_stats")
    assert (stats["max_requests_per_second"], stats["arrivals"]) == (expected, arrivals)


async def test_stats_count_requests_responses_and_created(
        start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start()
    await post(session, sandbox, FORMANT, formant_body())
    await post(session, sandbox, AGENTS, agents_body())
    await post(session, sandbox, AGENTS, agents_body(), auth=None)
    await post(session, sandbox, FORMANT, formant_body(agent_id=99))
    stats = await get(session, sandbox, "/_stats")
    assert stats == {"requests": 4, "created": 2, "responses": {"200": 2, "401": 1, "404": 1},
                     "faults": {"fail": 0, "reset": 0, "lost": 0},
                     "max_requests_per_second": 4, "arrivals": [0.0] * 4}


# --- configuration and hosting -------------------------------------------------------------------

@pytest.mark.parametrize(("knobs", "message"), [
    ({"fail": 1.5}, "fail must be a probability"),
    ({"reset": -0.1}, "reset must be a probability"),
    ({"lost": float("nan")}, "lost must be a probability"),
    ({"delay": -1.0}, "delay must be zero or more"),
    ({"rate": 0}, "rate must be positive"),
    ({"per_number": -5.0}, "per_number must be positive"),
])
def test_config_rejects_impossible_values(knobs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SandboxConfig(**knobs)


def test_sandbox_thread_serves_synchronous_callers() -> None:
    with SandboxThread(SandboxConfig(token="t")) as thread:
        request = urllib.request.Request(
            thread.url + AGENTS, data=json.dumps(agents_body()).encode(), method="POST",
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["call_status"] == "initiated"
        with urllib.request.urlopen(thread.url + "/_calls", timeout=5) as response:
            assert [call["api"] for call in json.load(response)] == ["agents"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(thread.url + "/_calls", timeout=1)


def test_serve_prints_its_url_and_stops_on_ctrl_c() -> None:
    code = ("from dialer.sandbox import SandboxConfig, serve; "
            "serve(SandboxConfig(token='s3cret'), port=0)")
    with subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            url = line.split(" listening on ")[1].split()[0]
            with urllib.request.urlopen(url + "/_stats", timeout=5) as response:
                assert json.load(response)["requests"] == 0
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert line.startswith("dialer sandbox listening on http://127.0.0.1:")
    assert "s3cret" not in line


async def test_stop_closes_the_port(start: Start, session: aiohttp.ClientSession) -> None:
    sandbox = await start()
    await sandbox.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await get(session, sandbox, "/_stats")
