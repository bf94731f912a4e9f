"""The provider interface: turn one row into one HTTP request, and its answer into an Outcome.

The dispatcher never looks at status codes or bodies; it reads ``Outcome.kind`` only:

    created          the call exists; ``call_id`` and ``status`` (initiated/scheduled) say which
    already_created  the provider already had this call (our idempotency key); its id is not known
    rejected         this row can never work (bad number...): report ``failed`` with ``message``
    retry_safe       nothing was created (429, 503, could not connect): safe to send again
    ambiguous        the request may have created a call (timeout, dropped connection, 5xx)
    fatal            every row would fail (bad key, unknown agent): stop the run

Transport failures are classified here once for every provider: a failure to connect is
``retry_safe``; any failure after the request may have left is ``ambiguous``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import enum
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp

__all__ = ["Kind", "Outcome", "Call", "Provider", "client_session", "parse_retry_after", "API_KEY_VARIABLE",
           "MAX_BODY_BYTES"]

API_KEY_VARIABLE = "DIALER_API_KEY"
"""The environment variable the API key is read from."""

MAX_BODY_BYTES = 1 << 20
"""Read at most this much of a response; anything longer is not an answer we can trust."""


class Kind(str, enum.Enum):
    CREATED = "created"
    ALREADY_CREATED = "already_created"
    REJECTED = "rejected"
    RETRY_SAFE = "retry_safe"
    AMBIGUOUS = "ambiguous"
    FATAL = "fatal"


@dataclass(frozen=True)
class Outcome:
    """What one request achieved, as far as the client can know."""

    kind: Kind
    message: str = ""
    call_id: str = ""
    status: str = ""
    retry_after: float | None = None
    account_wide: bool = False
    """For ``retry_safe``: the limit is the account's, so every request should wait."""


@dataclass(frozen=True)
class Call:
    """One row to call: its E.164 number, the named values it carries, its idempotency key, and
    the optional fields some APIs take (``scheduled_for`` is an ISO 8601 UTC time)."""

    row: int
    phone: str
    fields: tuple[tuple[str, str], ...]
    idempotency_key: str
    conversation_id: str | None = None
    retry_context: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    scheduled_for: str | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


class Provider(ABC):
    """A call API. Subclasses say how to build a request and how to read an answer."""

    name: ClassVar[str]
    default_base_url: ClassVar[str | None]
    replay_safe: ClassVar[bool]
    """True when re-sending an ambiguous request cannot create a second call (idempotency key)."""

    def __init__(self, *, base_url: str, api_key: str, agent_id: int, wall_clock=time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} agent={self.agent_id}>"

    @abstractmethod
    def request(self, call: Call) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body that place ``call``."""

    @abstractmethod
    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Outcome:
        """The outcome of an HTTP answer; ``body`` is parsed JSON, or ``None`` if it was not JSON."""

    async def place(self, session: aiohttp.ClientSession, call: Call, *,
                    on_sent: Callable[[], None] | None = None) -> Outcome:
        """Send one request and classify whatever happens; never raises for transport trouble.

        ``on_sent`` is called as the request's headers are written, on a session made by
        ``client_session`` (the pacer counts the request from then)."""
        url, body = self.request(call)
        data = json.dumps(body).encode()
        try:
            async with session.post(url, data=data, headers=self._headers, trace_request_ctx=on_sent) as response:
                raw = await response.content.read(MAX_BODY_BYTES + 1)
                return self._redacted(self.classify(response.status, response.headers, _json_or_none(raw)))
        except aiohttp.ConnectionTimeoutError:
            return Outcome(Kind.RETRY_SAFE, "timed out connecting to the provider")
        except aiohttp.ClientConnectorError as error:
            return Outcome(Kind.RETRY_SAFE, f"could not connect to the provider ({_reason(error)})")
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return Outcome(Kind.AMBIGUOUS, "no answer in time after the request was sent")
        except aiohttp.ServerDisconnectedError:
            return Outcome(Kind.AMBIGUOUS, "the provider dropped the connection without answering")
        except (aiohttp.ClientError, OSError) as error:
            return Outcome(Kind.AMBIGUOUS, f"the request failed after it may have been sent ({type(error).__name__})")

    def _redacted(self, outcome: Outcome) -> Outcome:
        """The outcome with the API key blanked out, should the provider echo it back."""
        if self._api_key and (self._api_key in outcome.message or self._api_key in outcome.call_id):
            return dataclasses.replace(outcome, message=outcome.message.replace(self._api_key, "[key]"),
                                       call_id=outcome.call_id.replace(self._api_key, "[key]"))
        return outcome

    def retry_after(self, headers: Mapping[str, str]) -> float | None:
        return parse_retry_after(headers.get("Retry-After"), self._wall_clock())

    def server_trouble(self, status: int) -> Outcome:
        """5xx: a 503 was not acted on; 500, 502, 504 may have been."""
        if status == 503:
            return Outcome(Kind.RETRY_SAFE, "provider unavailable (503)")
        return Outcome(Kind.AMBIGUOUS, f"provider error ({status}); the call may or may not exist")


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """The one HTTP session of a run: ``concurrency`` connections at most, timeouts that separate
    "could not connect" (nothing sent) from "no answer" (maybe acted on), and a hook that tells
    ``place``'s ``on_sent`` when a request's headers leave."""
    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(_headers_sent)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
        timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=10, sock_read=30),
        trace_configs=[tracing])


async def _headers_sent(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    on_sent = context.trace_request_ctx
    if callable(on_sent):
        on_sent()


def _json_or_none(raw: bytes) -> Any:
    if len(raw) > MAX_BODY_BYTES:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _reason(error: aiohttp.ClientConnectorError) -> str:
    return error.os_error.strerror or type(error.os_error).__name__
