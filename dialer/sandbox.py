"""An embedded fake of both call providers, for tests, benchmarks and the offline demo.

One aiohttp server answers both APIs, as ``shared/reference/assumptions.md`` describes them:

    POST /v1/call                       Formant        errors {"error": {"code", "message"}}
    POST /api/v1/global/agents/call     Agents API     errors {"detail": message}
    GET  /_calls                        the ledger: every call created, in order (no key needed)
    GET  /_stats                        counters, arrival times, max_requests_per_second

Knobs (``SandboxConfig``):

    token       the key expected in ``Authorization: Bearer <token>``; never echoed
    rate        account-wide: more than ``rate`` POSTs arriving within 1 s -> 429, Retry-After: 1
    per_number  a number called less than ``per_number`` s ago -> 429, Retry-After: ceil(rest)
    fail        probability of a 503 with a plain-text body; nothing created
    reset       probability of dropping the connection without a response; nothing created
    lost        probability of creating the call, then dropping the connection without a response
    delay       seconds between creating the call and answering (through the injected ``sleep``)
    seed        seeds the one ``random.Random`` the faults are drawn from
    agents      agent id -> has a phone number (unknown: 404; False: Formant 422, Agents API 404)

Every POST, in this order:

    1. arrival recorded (clock read once; that time is used for everything below), and three
       fault numbers drawn, always and in the order fail, reset, lost, so that with one seed the
       n-th request meets the same faults whatever the requests before it were;
    2. key check -> 401;
    3. body read, then ``fail`` -> 503, ``reset`` -> dropped;
    4. body validation -> 422 / 400 (Agents API, phone missing) / 404 (agent); shape first, then the
       agent lookup;
    5. account-wide rate -> 429; 6. per-number limit -> 429; 7. idempotency key -> 409 (Formant);
    8. create: ledger, idempotency key (valid 24 h), last-call time of the number;
    9. ``lost`` -> dropped; 10. ``delay``; 11. answer 200.

Choices where the references are silent: every POST counts toward the rate (401s and 429s
included: "retries included"); the per-number limit is kept per API; JSON ``null`` in an optional
field means absent; Agents API ``phone_number`` ``""`` counts as missing (400); numbers must
fully match ``+[1-9][0-9]{6,14}`` (no lenient "+" repair); ``scheduled_for`` is judged against the
wall clock (the sandbox clock is monotonic) and a datetime without offset is UTC; Formant error
codes not given by the table are ``validation_error`` (422), ``idempotency_key_used`` (409) and
``rate_limited`` (429).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["SandboxConfig", "Sandbox", "SandboxThread", "serve", "max_per_second"]

_FORMANT_PATH = "/v1/call"
_AGENTS_PATH = "/api/v1/global/agents/call"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_KEY_TTL = 24 * 3600.0
_FREEZE_EVERY = 1000
_MAX_AHEAD = timedelta(days=30)
_UNAVAILABLE = "503 Service Unavailable: upstream overloaded, try again later"
_FORMANT_CODES = {401: "unauthorized", 404: "agent_not_found", 409: "idempotency_key_used",
                  422: "validation_error", 429: "rate_limited"}
# Optional Formant fields: name, required type, how the 422 message names it.
_FORMANT_OPTIONAL = (("conversation_id", str, "a string"), ("idempotency_key", str, "a string"),
                     ("metadata", str, "a string"), ("retry_context", dict, "an object"),
                     ("scheduled_for", str, "an ISO 8601 datetime"))


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; see the module docstring for each knob."""

    token: str = "sandbox-key"
    rate: float | None = None
    per_number: float | None = None
    fail: float = 0.0
    reset: float = 0.0
    lost: float = 0.0
    delay: float = 0.0
    seed: int = 0
    agents: Mapping[int, bool] = field(default_factory=lambda: {1: True, 2: False})

    def __post_init__(self) -> None:
        for name in ("fail", "reset", "lost"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, "
                                 f"got {getattr(self, name)!r}")
        if not self.delay >= 0.0:
            raise ValueError(f"delay must be zero or more seconds, got {self.delay!r}")
        for name in ("rate", "per_number"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")


class _Reject(Exception):
    """An error answer: nothing is created."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Sandbox:
    """The fake provider. ``calls`` is the ledger; ``url`` is set by ``start``."""

    def __init__(self, config: SandboxConfig = SandboxConfig(), *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self.calls: list[dict[str, Any]] = []
        self.url = ""
        self._clock = clock
        self._sleep = sleep
        self._bearer = f"Bearer {config.token}"
        self._agents = dict(config.agents)
        self._rng = random.Random(config.seed)
        self._arrivals: list[float] = []
        self._window: deque[float] = deque()
        self._responses: Counter[int] = Counter()
        self._faults = {"fail": 0, "reset": 0, "lost": 0}
        self._keys: dict[str, float] = {}
        self._last_call: dict[tuple[str, str], float] = {}
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """A new aiohttp application serving this sandbox's state."""
        app = web.Application()
        app.router.add_post(_FORMANT_PATH, self._formant)
        app.router.add_post(_AGENTS_PATH, self._agents_api)
        app.router.add_get("/_calls", self._ledger)
        app.router.add_get("/_stats", self._stats)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port) and return the base URL."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _formant(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "formant")

    async def _agents_api(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "agents")

    async def _handle(self, request: web.Request, api: str) -> web.StreamResponse:
        now = self._clock()
        self._arrivals.append(now)
        window = self._window
        window.append(now)
        while now - window[0] >= 1.0:
            window.popleft()
        burst = len(window)
        draw = self._rng.random
        fail, reset, lost = draw(), draw(), draw()
        config = self.config
        formant = api == "formant"
        try:
            if request.headers.get("Authorization") != self._bearer:
                raise _Reject(401, "invalid API key" if formant else "Invalid token")
            raw = await request.read()
            if fail < config.fail:
                self._faults["fail"] += 1
                return self._count(web.Response(status=503, text=_UNAVAILABLE))
            if reset < config.reset:
                return self._drop(request, "reset")
            call = (_parse_formant if formant else _parse_agents)(raw, self._agents)
            if config.rate is not None and burst > config.rate:
                raise _Reject(429, "rate limit exceeded" if formant else "Rate limit exceeded", 1)
            number = (api, call["phone"])
            last = self._last_call.get(number)
            if config.per_number is not None and last is not None:
                rest = config.per_number - (now - last)
                if rest > 0:
                    raise _Reject(429, "rate limit exceeded for this number" if formant
                                  else "Rate limit exceeded", math.ceil(rest))
            key = call["idempotency_key"]
            if key is not None and now - self._keys.get(key, -math.inf) < _KEY_TTL:
                raise _Reject(409, "idempotency key already used")
        except _Reject as reject:
            return self._count(_error(reject, formant))
        call_id = str(uuid.uuid4())
        self.calls.append({"id": call_id, "api": api, **call, "at": now})
        if len(self.calls) % _FREEZE_EVERY == 0:
            gc.freeze()  # the ledger only grows: keep full collections from stalling the arrival clock
        self._last_call[number] = now
        if key is not None:
            self._keys[key] = now
        if lost < config.lost:
            return self._drop(request, "lost")
        if config.delay:
            await self._sleep(config.delay)
        if formant:
            body: dict[str, Any] = {"data": {
                "agent_id": call["agent_id"], "conversation_id": call["conversation_id"],
                "scheduled_for": call["scheduled_for"],
                "status": "initiated" if call["scheduled_for"] is None else "scheduled",
                "trace_id": call_id}}
        else:
            body = {"execution_id": call_id, "agent_id": call["agent_id"],
                    "phone_number": call["phone"], "call_status": "initiated"}
        return self._count(web.json_response(body))

    def _count(self, response: web.Response) -> web.Response:
        self._responses[response.status] += 1
        return response

    def _drop(self, request: web.Request, fault: str) -> web.StreamResponse:
        """Close the connection without answering; aiohttp quietly discards the returned reply."""
        self._faults[fault] += 1
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    async def _ledger(self, request: web.Request) -> web.Response:
        return web.json_response(self.calls)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "requests": len(self._arrivals),
            "created": len(self.calls),
            "responses": {str(status): n for status, n in sorted(self._responses.items())},
            "faults": dict(self._faults),
            "max_requests_per_second": max_per_second(self._arrivals),
            "arrivals": self._arrivals,
        })


def _error(reject: _Reject, formant: bool) -> web.Response:
    body: dict[str, Any] = (
        {"error": {"code": _FORMANT_CODES[reject.status], "message": reject.message}}
        if formant else {"detail": reject.message})
    headers = None if reject.retry_after is None else {"Retry-After": str(reject.retry_after)}
    return web.json_response(body, status=reject.status, headers=headers)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        body = None
    if not isinstance(body, dict):
        raise _Reject(422, "request body must be a JSON object")
    return body


def _agent_id(body: dict[str, Any]) -> int:
    agent_id = body.get("agent_id")
    if type(agent_id) is not int:  # bool is not an agent id
        raise _Reject(422, "agent_id must be an integer")
    return agent_id


def _parse_formant(raw: bytes, agents: Mapping[int, bool]) -> dict[str, Any]:
    """A valid Formant request as ledger fields, or ``_Reject``."""
    body = _json_object(raw)
    agent_id = _agent_id(body)
    params = body.get("parameters")
    if not isinstance(params, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and "value" in p
            for p in params):
        raise _Reject(422, "parameters must be a list of {name, value} objects")
    phone = next((p["value"] for p in params if p["name"] == "customer_phone"), None)
    if phone is None:
        raise _Reject(422, "customer_phone parameter is required")
    if not isinstance(phone, str) or not _E164.fullmatch(phone):
        raise _Reject(422, "customer_phone must be an E.164 number")
    for name, kind, what in _FORMANT_OPTIONAL:
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise _Reject(422, f"{name} must be {what}")
    if body.get("scheduled_for") is not None:
        _check_schedule(body["scheduled_for"])
    has_phone = agents.get(agent_id)
    if has_phone is None:
        raise _Reject(404, "agent not found")
    if not has_phone:
        raise _Reject(422, "agent has no phone number configured")
    return {"agent_id": agent_id, "phone": phone, "parameters": params,
            "metadata": body.get("metadata"), "idempotency_key": body.get("idempotency_key"),
            "conversation_id": body.get("conversation_id"),
            "retry_context": body.get("retry_context"), "scheduled_for": body.get("scheduled_for")}


def _check_schedule(text: str) -> None:
    """``scheduled_for`` must be ISO 8601, in the future and at most 30 days ahead."""
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise _Reject(422, "scheduled_for must be an ISO 8601 datetime") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if not timedelta(0) < when - datetime.now(timezone.utc) <= _MAX_AHEAD:
        raise _Reject(422, "scheduled_for must be in the future and within 30 days")


def _parse_agents(raw: bytes, agents: Mapping[int, bool]) -> dict[str, Any]:
    """A valid Agents API request as ledger fields, or ``_Reject``."""
    body = _json_object(raw)
    agent_id = _agent_id(body)
    phone = body.get("phone_number")
    if phone is None or phone == "":
        raise _Reject(400, "Phone Number is required")
    if not isinstance(phone, str) or not _E164.fullmatch(phone):
        raise _Reject(422, "Invalid phone number format")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Reject(422, "metadata must be an object")
    if not agents.get(agent_id):
        raise _Reject(404, "Agent not found or not active")
    return {"agent_id": agent_id, "phone": phone, "parameters": None, "metadata": metadata,
            "idempotency_key": None, "conversation_id": None, "retry_context": None,
            "scheduled_for": None}


def max_per_second(arrivals: list[float]) -> int:
    """The most arrivals within any 1-second window (latest minus earliest < 1 s)."""
    times = sorted(arrivals)
    best = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


class SandboxThread:
    """Runs a Sandbox in a daemon thread with its own event loop, for synchronous callers
    (CLI demo, subprocess-free tests). ``url`` is set once ``with`` has entered."""

    def __init__(self, config: SandboxConfig = SandboxConfig()) -> None:
        self.config = config
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dialer-sandbox", daemon=True)

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"sandbox could not start: {self._error}") from self._error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._loop is not None and self._done is not None
        self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        sandbox = Sandbox(self.config)
        try:
            self.url = await sandbox.start()
        except Exception as error:  # reported to the caller by __enter__
            self._error = error
            return
        finally:
            self._ready.set()
        try:
            await self._done.wait()
        finally:
            await sandbox.stop()


def serve(config: SandboxConfig, port: int = 8787, host: str = "127.0.0.1") -> None:
    """Run in the foreground until Ctrl-C (for `dialer sandbox`); prints one line with the URL
    to stderr."""
    try:
        asyncio.run(_serve(config, host, port))
    except KeyboardInterrupt:
        pass


async def _serve(config: SandboxConfig, host: str, port: int) -> None:
    sandbox = Sandbox(config)
    url = await sandbox.start(host, port)
    print(f"dialer sandbox listening on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
