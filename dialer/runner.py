"""``run_campaign``: load, plan, call, report. The CLI is a thin layer over this.

A dry run plans and reports. A real run keeps a journal beside the report
(``REPORT.csv.journal``): the first run fills it from the plan, a re-run of the same command
resumes from it, and the report is rebuilt from it at the end of every run, interrupted or not.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from dialer.campaign import Campaign
from dialer.contacts import Contacts, load_contacts
from dialer.dispatch import CallFactory, Dispatcher, DispatchResult
from dialer.errors import FatalProviderError, InputError, UsageError
from dialer.journal import Journal, fingerprint, journal_path
from dialer.pacing import Pacer
from dialer.plan import count_statuses, plan_contacts, top_reasons
from dialer.providers import PROVIDERS, Provider
from dialer.report import write_report
from dialer.retry import RetryPolicy
from dialer.sandbox import Sandbox, SandboxConfig

__all__ = ["RunResult", "run_campaign", "API_KEY_VARIABLE"]

API_KEY_VARIABLE = "DIALER_API_KEY"


@dataclass
class RunResult:
    """What a run did: the rows it read, the status of each, and where the report is."""

    contacts: Contacts
    report: Path
    statuses: dict[str, int]
    dispatch: DispatchResult | None = None
    top_reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.dispatch is not None and self.dispatch.interrupted


def run_campaign(campaign: Campaign, *, api_key: str | None = None,
                 on_progress: Callable[[DispatchResult, int], None] | None = None) -> RunResult:
    """Run ``campaign`` and write its report.

    Raises ``DialerError`` subclasses for user mistakes, and ``FatalProviderError`` (after the
    report is written) when the provider refuses in a way that makes every call fail.
    ``on_progress(result, total)`` is called after each finished row.
    """
    contacts = load_contacts(campaign.contacts, sheet=campaign.sheet, phone_column=campaign.phone_column)
    if campaign.dry_run:
        return _dry_run(campaign, contacts)
    campaign.check_can_call()
    if not campaign.uses_sandbox and not api_key:
        raise UsageError(f"set the {API_KEY_VARIABLE} environment variable to your provider's API key")
    identity = fingerprint(campaign.contacts, campaign.identity())
    journal = Journal.open(journal_path(campaign.out), identity, restart=campaign.restart)
    try:
        if journal.is_new:
            journal.create(plan_contacts(contacts, campaign.region), identity)
        retry = RetryPolicy(max_attempts=campaign.max_attempts)
        journal.recover(replay_safe=PROVIDERS[campaign.provider].replay_safe, now=time.time(),
                        replay_window=retry.replay_window)
        if campaign.resend_unknown:
            journal.resend_unknown()
        try:
            dispatched = asyncio.run(_dispatch(campaign, contacts, journal, retry, api_key, on_progress))
        finally:  # whatever happened, the report says where every row stands
            results = journal.results()
            report = _write(contacts, results, campaign.out)
    finally:
        journal.close()
    result = RunResult(contacts, report, count_statuses(results["status"]), dispatched,
                       top_reasons(results["status"], results["error"]))
    if dispatched.fatal:
        raise FatalProviderError(f"{dispatched.fatal}; the run stopped, the report is {report}")
    return result


def _dry_run(campaign: Campaign, contacts: Contacts) -> RunResult:
    if journal_path(campaign.out).exists():
        raise UsageError(f"{campaign.out} belongs to a real run (it has a journal); "
                         "give the dry run another --out")
    plan = plan_contacts(contacts, campaign.region)
    results = {"phone_e164": plan.e164, "status": plan.status,
               "call_id": np.full(len(plan), "", dtype=object),
               "attempts": np.full(len(plan), "0", dtype=object), "error": plan.error}
    report = _write(contacts, results, campaign.out)
    return RunResult(contacts, report, plan.counts(), top_reasons=plan.top_reasons())


def _write(contacts: Contacts, results: dict, out: Path) -> Path:
    try:
        return write_report(contacts, results, out)
    except OSError as error:
        raise InputError(f"cannot write the report {out} ({error.strerror or error}); choose another --out") from None


async def _dispatch(campaign: Campaign, contacts: Contacts, journal: Journal, retry: RetryPolicy,
                    api_key: str | None, on_progress: Callable[[DispatchResult, int], None] | None) -> DispatchResult:
    total = journal.count_pending()
    async with AsyncExitStack() as stack:
        base_url = campaign.base_url
        if campaign.uses_sandbox:
            api_key = secrets.token_urlsafe(16)
            try:
                config = SandboxConfig(token=api_key, **campaign.sandbox)
            except (TypeError, ValueError) as error:
                raise UsageError(f"bad [sandbox] settings: {error}") from None
            base_url = (await stack.enter_async_context(Sandbox(config))).url
        provider_class = PROVIDERS[campaign.provider]
        provider: Provider = provider_class(base_url=base_url or provider_class.default_base_url,
                                            api_key=api_key, agent_id=campaign.agent_id)
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=campaign.concurrency, limit_per_host=campaign.concurrency),
            timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=10, sock_read=30)))
        dispatcher = Dispatcher(
            provider, journal, CallFactory(contacts, campaign_id=campaign.campaign_id, agent_id=campaign.agent_id),
            pacer=Pacer(campaign.rate), retry=retry, concurrency=campaign.concurrency,
            on_progress=(lambda result: on_progress(result, total)) if on_progress else None)
        _install_signal_handlers(dispatcher)
        return await dispatcher.run(session)


def _install_signal_handlers(dispatcher: Dispatcher) -> None:
    """First Ctrl-C or SIGTERM: finish what is in flight, then stop. Second: stop at once."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if dispatcher.stopping:
            dispatcher.cancel()
        else:
            dispatcher.stop(interrupted=True)

    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, on_signal)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
