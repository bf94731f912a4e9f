"""Call providers. To add one: write a module with a ``Provider`` subclass and register it here."""

from __future__ import annotations

from dialer.providers.agents import AgentsProvider
from dialer.providers.base import Call, Kind, Outcome, Provider
from dialer.providers.formant import FormantProvider

__all__ = ["PROVIDERS", "Call", "Kind", "Outcome", "Provider"]

PROVIDERS: dict[str, type[Provider]] = {
    FormantProvider.name: FormantProvider,
    AgentsProvider.name: AgentsProvider,
}
