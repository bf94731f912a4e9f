"""Agents API: ``POST {base}/api/v1/global/agents/call``; no idempotency key, so a request whose
answer is lost is ``unknown`` and never re-sent on its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dialer.providers.base import API_KEY_VARIABLE, Call, Kind, Outcome, Provider

__all__ = ["AgentsProvider"]


class AgentsProvider(Provider):
    name = "agents"
    default_base_url = None  # its page names no public host: --base-url is required
    replay_safe = False

    def request(self, call: Call) -> tuple[str, dict[str, Any]]:
        body = {"agent_id": self.agent_id, "phone_number": call.phone,
                "metadata": {**dict(call.fields), **(call.metadata or {})}}
        return f"{self.base_url}/api/v1/global/agents/call", body

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Outcome:
        detail = body.get("detail") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, str) else ""
        if status == 200:
            execution_id = body.get("execution_id") if isinstance(body, dict) else None
            if not isinstance(execution_id, str) or not execution_id:
                return Outcome(Kind.AMBIGUOUS, "the provider answered 200 without an execution_id")
            return Outcome(Kind.CREATED, call_id=execution_id, status="initiated")
        if status == 401:
            return Outcome(Kind.FATAL, f"the provider refused the API key (401); check {API_KEY_VARIABLE}")
        if status == 404:
            return Outcome(Kind.FATAL, f"agent {self.agent_id} was not found or is not active (404); check "
                                       "--agent-id, and that the agent is an active outbound voice agent")
        if status in (400, 422):
            return Outcome(Kind.REJECTED, detail or f"rejected by the provider ({status})")
        if status == 429:
            return Outcome(Kind.RETRY_SAFE, detail or "rate limit exceeded (429)",
                           retry_after=self.retry_after(headers), account_wide=True)
        if status >= 500:
            return self.server_trouble(status)
        return Outcome(Kind.AMBIGUOUS, f"unexpected answer ({status}); the call may or may not exist")
