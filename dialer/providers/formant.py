"""Formant voice API: ``POST {base}/v1/call`` with an idempotency key, so replays are harmless."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dialer.providers.base import API_KEY_VARIABLE, Call, Kind, Outcome, Provider

__all__ = ["FormantProvider"]


class FormantProvider(Provider):
    name = "formant"
    default_base_url = "https://api.voice.formantai.com"
    replay_safe = True

    def request(self, call: Call) -> tuple[str, dict[str, Any]]:
        parameters = [{"name": "customer_phone", "value": call.phone}]
        parameters += [{"name": name, "value": value} for name, value in call.fields]
        body: dict[str, Any] = {"agent_id": self.agent_id, "parameters": parameters,
                                "idempotency_key": call.idempotency_key}
        optional = {"conversation_id": call.conversation_id, "retry_context": call.retry_context,
                    "metadata": json.dumps(call.metadata, ensure_ascii=False) if call.metadata is not None else None,
                    "scheduled_for": call.scheduled_for}
        body.update({key: value for key, value in optional.items() if value is not None})
        return f"{self.base_url}/v1/call", body

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Outcome:
        message = _error_message(body)
        if status == 200:
            data = body.get("data") if isinstance(body, dict) else None
            trace_id = data.get("trace_id") if isinstance(data, dict) else None
            if not isinstance(trace_id, str) or not trace_id:
                return Outcome(Kind.AMBIGUOUS, "the provider answered 200 without a trace_id")
            state = "scheduled" if data.get("status") == "scheduled" else "initiated"
            return Outcome(Kind.CREATED, call_id=trace_id, status=state)
        if status == 401:
            return Outcome(Kind.FATAL, f"the provider refused the API key (401); check {API_KEY_VARIABLE}")
        if status == 404:
            return Outcome(Kind.FATAL, f"agent {self.agent_id} was not found (404); check --agent-id")
        if status == 422 and "no phone number" in message:
            return Outcome(Kind.FATAL, f"agent {self.agent_id} has no phone number configured (422); "
                                       "configure one in the dashboard")
        if status == 422:
            return Outcome(Kind.REJECTED, message or "rejected by the provider (422)")
        if status == 409:
            return Outcome(Kind.ALREADY_CREATED, "the provider already had this call (idempotency key "
                                                 "used before); it did not return its id")
        if status == 429:
            return Outcome(Kind.RETRY_SAFE, message or "rate limit exceeded (429)",
                           retry_after=self.retry_after(headers),
                           account_wide="for this number" not in message)
        if status >= 500:
            return self.server_trouble(status)
        return Outcome(Kind.AMBIGUOUS, f"unexpected answer ({status}); the call may or may not exist")


def _error_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""
