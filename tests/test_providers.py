"""Providers: the request each API gets, and the outcome kind each answer produces.

Against the real sandbox over loopback, one case per row of assumptions.md, plus a scripted
local server for answers the sandbox never gives (500, 502, 504, odd bodies, dropped sockets).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from dialer.providers import PROVIDERS, Call, Kind, Outcome
from dialer.providers.agents import AgentsProvider
from dialer.providers.formant import FormantProvider
from dialer.sandbox import Sandbox, SandboxConfig

TOKEN = "test-key-123"
CALL = Call(row=0, phone="+14155552671", fields=(("customer_name", "Ana"), ("city", "Paris")),
            idempotency_key="key-1")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=2)) as client:
        yield client


async def place(provider_class, url: str, call: Call = CALL, *, agent_id: int = 1, key: str = TOKEN,
                session: aiohttp.ClientSession) -> Outcome:
    provider = provider_class(base_url=url, api_key=key, agent_id=agent_id)
    return await provider.place(session, call)


def test_registry_names_both_providers():
    assert PROVIDERS == {"formant": FormantProvider, "agents": AgentsProvider}
    assert (FormantProvider.replay_safe, AgentsProvider.replay_safe) == (True, False)


def test_formant_request_carries_e164_parameters_and_the_key():
    provider = FormantProvider(base_url="http://h/", api_key=TOKEN, agent_id=7)
    assert provider.request(CALL) == ("http://h/v1/call", {
        "agent_id": 7,
        "parameters": [{"name": "customer_phone", "value": "+14155552671"},
                       {"name": "customer_name", "value": "Ana"}, {"name": "city", "value": "Paris"}],
        "idempotency_key": "key-1"})


def test_agents_request_carries_e164_and_metadata_object():
    provider = AgentsProvider(base_url="http://h", api_key=TOKEN, agent_id=7)
    assert provider.request(CALL) == ("http://h/api/v1/global/agents/call", {
        "agent_id": 7, "phone_number": "+14155552671", "metadata": {"customer_name": "Ana", "city": "Paris"}})


def test_repr_never_shows_the_key():
    assert TOKEN not in repr(FormantProvider(base_url="http://h", api_key=TOKEN, agent_id=1))


# --- against the sandbox ---------------------------------------------------------------------


async def test_formant_success_is_created_with_the_trace_id(session):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        outcome = await place(FormantProvider, sandbox.url, session=session)
    assert outcome.kind is Kind.CREATED and outcome.status == "initiated"
    assert outcome.call_id == sandbox.calls[0]["id"]
    assert sandbox.calls[0]["parameters"] == [{"name": "customer_phone", "value": "+14155552671"},
                                              {"name": "customer_name", "value": "Ana"},
                                              {"name": "city", "value": "Paris"}]


async def test_agents_success_is_created_with_the_execution_id(session):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        outcome = await place(AgentsProvider, sandbox.url, session=session)
    assert outcome == Outcome(Kind.CREATED, call_id=sandbox.calls[0]["id"], status="initiated")
    assert (sandbox.calls[0]["phone"], sandbox.calls[0]["metadata"]) == ("+14155552671", {"customer_name": "Ana", "city": "Paris"})


@pytest.mark.parametrize("provider_class", [FormantProvider, AgentsProvider])
async def test_wrong_key_is_fatal(session, provider_class):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        outcome = await place(provider_class, sandbox.url, key="wrong", session=session)
    assert outcome == Outcome(Kind.FATAL, "the provider refused the API key (401); check DIALER_API_KEY")


@pytest.mark.parametrize("provider_class, agent_id, message", [
    (FormantProvider, 99, "agent 99 was not found (404); check --agent-id"),
    (FormantProvider, 2, "agent 2 has no phone number configured (422); configure one in the dashboard"),
    (AgentsProvider, 99, "agent 99 was not found or is not active (404); check --agent-id, and that the "
                         "agent is an active outbound voice agent"),
    (AgentsProvider, 2, "agent 2 was not found or is not active (404); check --agent-id, and that the "
                        "agent is an active outbound voice agent"),
])
async def test_agent_problems_are_fatal(session, provider_class, agent_id, message):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        outcome = await place(provider_class, sandbox.url, agent_id=agent_id, session=session)
    assert outcome == Outcome(Kind.FATAL, message)


@pytest.mark.parametrize("provider_class, phone, message", [
    (FormantProvider, "4155552671", "customer_phone must be an E.164 number"),
    (AgentsProvider, "4155552671", "Invalid phone number format"),
    (AgentsProvider, "", "Phone Number is required"),
])
async def test_bad_number_is_rejected_with_the_providers_message(session, provider_class, phone, message):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        outcome = await place(provider_class, sandbox.url, Call(0, phone, (), "k"), session=session)
    assert outcome == Outcome(Kind.REJECTED, message)


async def test_formant_reused_key_is_already_created(session):
    async with Sandbox(SandboxConfig(token=TOKEN)) as sandbox:
        await place(FormantProvider, sandbox.url, session=session)
        outcome = await place(FormantProvider, sandbox.url, session=session)
    assert outcome.kind is Kind.ALREADY_CREATED
    assert len(sandbox.calls) == 1


@pytest.mark.parametrize("provider_class, account_wide", [(FormantProvider, False), (AgentsProvider, True)])
async def test_per_number_limit_is_retry_safe_with_retry_after(session, provider_class, account_wide):
    async with Sandbox(SandboxConfig(token=TOKEN, per_number=60)) as sandbox:
        await place(provider_class, sandbox.url, session=session)
        outcome = await place(provider_class, sandbox.url, Call(0, CALL.phone, (), "another-key"), session=session)
    assert outcome.kind is Kind.RETRY_SAFE
    assert (outcome.retry_after, outcome.account_wide) == (60.0, account_wide)


@pytest.mark.parametrize("provider_class", [FormantProvider, AgentsProvider])
async def test_account_limit_is_retry_safe_and_account_wide(session, provider_class):
    async with Sandbox(SandboxConfig(token=TOKEN, rate=1)) as sandbox:
        await place(provider_class, sandbox.url, session=session)
        outcome = await place(provider_class, sandbox.url, Call(0, "+12125550100", (), "k2"), session=session)
    assert outcome.kind is Kind.RETRY_SAFE
    assert (outcome.retry_after, outcome.account_wide) == (1.0, True)


@pytest.mark.parametrize("provider_class", [FormantProvider, AgentsProvider])
async def test_503_is_retry_safe(session, provider_class):
    async with Sandbox(SandboxConfig(token=TOKEN, fail=1.0)) as sandbox:
        outcome = await place(provider_class, sandbox.url, session=session)
    assert outcome == Outcome(Kind.RETRY_SAFE, "provider unavailable (503)")


@pytest.mark.parametrize("fault", ["reset", "lost"])
@pytest.mark.parametrize("provider_class", [FormantProvider, AgentsProvider])
async def test_dropped_connection_is_ambiguous(session, provider_class, fault):
    async with Sandbox(SandboxConfig(token=TOKEN, **{fault: 1.0})) as sandbox:
        outcome = await place(provider_class, sandbox.url, session=session)
    assert outcome == Outcome(Kind.AMBIGUOUS, "the provider dropped the connection without answering")


async def test_connection_refused_is_retry_safe(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await place(FormantProvider, f"http://127.0.0.1:{port}", session=session)
    assert outcome.kind is Kind.RETRY_SAFE
    assert outcome.message.startswith("could not connect to the provider")


# --- answers the sandbox never gives: a scripted local server ---------------------------------


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Callable[[web.Request], web.StreamResponse]], asyncio.Future]]:
    """Start a local server whose every POST is answered by ``handler``; yields its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler) -> str:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def answer(status: int, body: str | bytes = b"", headers: dict | None = None):
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body, headers=headers or {})
    return handler


@pytest.mark.parametrize("provider_class, status, kind", [
    (FormantProvider, 500, Kind.AMBIGUOUS), (FormantProvider, 502, Kind.AMBIGUOUS),
    (FormantProvider, 504, Kind.AMBIGUOUS), (AgentsProvider, 500, Kind.AMBIGUOUS),
    (AgentsProvider, 502, Kind.AMBIGUOUS), (AgentsProvider, 504, Kind.AMBIGUOUS),
    (FormantProvider, 418, Kind.AMBIGUOUS), (AgentsProvider, 403, Kind.AMBIGUOUS),
])
async def test_other_server_answers_are_ambiguous(session, scripted, provider_class, status, kind):
    url = await scripted(answer(status, "<html>oops</html>"))
    assert (await place(provider_class, url, session=session)).kind is kind


@pytest.mark.parametrize("provider_class, body", [
    (FormantProvider, b"not json"), (FormantProvider, b'{"data": {"status": "initiated"}}'),
    (AgentsProvider, b"[]"), (AgentsProvider, b'{"call_status": "initiated"}'),
])
async def test_a_200_without_a_call_id_is_ambiguous(session, scripted, provider_class, body):
    url = await scripted(answer(200, body))
    assert (await place(provider_class, url, session=session)).kind is Kind.AMBIGUOUS


async def test_retry_after_as_http_date_is_understood(session, scripted):
    url = await scripted(answer(429, b'{"error": {"message": "rate limit exceeded"}}',
                                {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    provider = FormantProvider(base_url=url, api_key=TOKEN, agent_id=1, wall_clock=lambda: 1445412470.0)
    outcome = await provider.place(session, CALL)
    assert (outcome.kind, outcome.retry_after, outcome.account_wide) == (Kind.RETRY_SAFE, 10.0, True)


async def test_a_server_that_never_answers_is_ambiguous(scripted):
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    url = await scripted(silent)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.2)) as quick:
        outcome = await place(AgentsProvider, url, session=quick)
    release.set()
    assert outcome == Outcome(Kind.AMBIGUOUS, "no answer in time after the request was sent")
