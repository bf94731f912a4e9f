"""``run_campaign``: load, plan, call, report. The CLI is a thin layer over this.

A dry run plans and reports. A real run keeps a journal beside the report
(``REPORT.csv.journal``): the first run fills it from the plan, a re-run of the same command
resumes from it, and the report is rebuilt from it at the end of every run, interrupted or not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import secrets
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dialer.campaign import Campaign
from dialer.contacts import Contacts, load_contacts
from dialer.dispatch import CallFactory, Dispatcher, DispatchResult
from dialer.errors import FatalProviderError, InputError, UsageError
from dialer.journal import Journal, fingerprint, journal_path
from dialer.pacing import Pacer
from dialer.plan import Plan, Status, count_statuses, plan_contacts, top_reasons
from dialer.providers import PROVIDERS, Provider
from dialer.providers.base import API_KEY_VARIABLE, client_session
from dialer.report import write_report
from dialer.retry import RetryPolicy
from dialer.sandbox import Sandbox, SandboxConfig
from dialer.suppress import already_called_numbers, do_not_call_numbers
from dialer.windows import WindowPolicy

__all__ = ["RunResult", "run_campaign", "validate_campaign", "API_KEY_VARIABLE"]


@dataclass
class RunResult:
    """What a run did: the rows it read, the status of each, and where the report is."""

    contacts: Contacts
    report: Path | None
    statuses: dict[str, int]
    dispatch: DispatchResult | None = None
    top_reasons: list[tuple[str, int]] = field(default_factory=list)
    estimated_seconds: float | None = None
    """For a dry run: how long calling the ready rows would take at the campaign's rate."""

    @property
    def interrupted(self) -> bool:
        return self.dispatch is not None and self.dispatch.interrupted


def run_campaign(campaign: Campaign, *, api_key: str | None = None,
                 on_progress: Callable[[DispatchResult, int], None] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> RunResult:
    """Run ``campaign`` and write its report.

    Raises ``DialerError`` subclasses for user mistakes, and ``FatalProviderError`` (after the
    report is written) when the provider refuses in a way that makes every call fail.
    ``on_progress(result, total)`` is called after each finished row, and while the run waits
    for a calling window.
    """
    contacts, calls, suppressions = _prepare(campaign)
    if campaign.dry_run:
        return _dry_run(campaign, contacts, suppressions, wall_clock(), write=True)
    campaign.check_can_call()
    if not campaign.uses_sandbox and not api_key:
        raise UsageError(f"set the {API_KEY_VARIABLE} environment variable to your provider's API key")
    identity = fingerprint(campaign.contacts, campaign.identity())
    journal = Journal.open(journal_path(campaign.out), identity, restart=campaign.restart)
    try:
        if journal.is_new:
            journal.create(plan_contacts(contacts, campaign.region), identity)
        retry = RetryPolicy(max_attempts=campaign.max_attempts)
        journal.recover(replay_safe=PROVIDERS[campaign.provider].replay_safe, now=wall_clock(),
                        replay_window=retry.replay_window)
        if campaign.resend_unknown:
            journal.resend_unknown()
        for numbers, status, reason in suppressions:
            journal.suppress(numbers, status, reason, wall_clock())
        gc.collect()
        gc.freeze()  # what is loaded stays: spare the dispatch loop long collections of it
        try:
            dispatched = asyncio.run(_dispatch(campaign, calls, journal, retry, api_key, on_progress, wall_clock))
        finally:  # whatever happened, the report says where every row stands
            gc.unfreeze()
            results = journal.results()
            report = _write(contacts, results, campaign.out)
    finally:
        journal.close()
    result = RunResult(contacts, report, count_statuses(results["status"]), dispatched,
                       top_reasons(results["status"], results["error"]))
    if dispatched.fatal:
        raise FatalProviderError(f"{dispatched.fatal}; the run stopped, the report is {report}")
    return result


def validate_campaign(campaign: Campaign, *, wall_clock: Callable[[], float] = time.time) -> RunResult:
    """Check everything a run would use, without calling or writing: the counts per status the
    run would give if it started now, and how long it would take at the campaign's rate."""
    contacts, _, suppressions = _prepare(campaign)
    return _dry_run(campaign, contacts, suppressions, wall_clock(), write=False)


def _prepare(campaign: Campaign) -> tuple[Contacts, CallFactory, list[tuple[set[str], str, str]]]:
    """Load and check what the campaign names: contacts, the columns it uses, suppression lists."""
    contacts = load_contacts(campaign.contacts, sheet=campaign.sheet, phone_column=campaign.phone_column)
    calls = CallFactory(contacts, campaign_id=campaign.campaign_id, agent_id=campaign.agent_id or 0,
                        parameters=campaign.parameters,
                        zone_column=campaign.window.timezone_column if campaign.window else None)
    return contacts, calls, _suppressions(campaign)


def _suppressions(campaign: Campaign) -> list[tuple[set[str], str, str]]:
    """Numbers never to call, with the status and reason their rows get."""
    found = []
    for path in campaign.dnc:
        found.append((do_not_call_numbers((path,), campaign.region), Status.DNC,
                      f"on the do-not-call list {path.name}"))
    if campaign.exclude_report is not None:
        found.append((already_called_numbers(campaign.exclude_report), Status.EXCLUDED,
                      f"already called in {campaign.exclude_report.name}"))
    return found


def _dry_run(campaign: Campaign, contacts: Contacts, suppressions: list[tuple[set[str], str, str]],
             now: float, *, write: bool) -> RunResult:
    if write and journal_path(campaign.out).exists():
        raise UsageError(f"{campaign.out} belongs to a real run (it has a journal); "
                         "give the dry run another --out")
    plan = plan_contacts(contacts, campaign.region)
    for numbers, status, reason in suppressions:
        plan.suppress(numbers, status, reason)
    if (policy := campaign.window_policy()) is not None:
        _check_windows(plan, contacts, policy, dt.datetime.fromtimestamp(now, dt.timezone.utc))
    results = {"phone_e164": plan.e164, "status": plan.status,
               "call_id": np.full(len(plan), "", dtype=object),
               "attempts": np.full(len(plan), "0", dtype=object), "error": plan.error}
    report = _write(contacts, results, campaign.out) if write else None
    return RunResult(contacts, report, plan.counts(), top_reasons=plan.top_reasons(),
                     estimated_seconds=int((plan.status == Status.READY).sum()) / campaign.rate)


def _check_windows(plan: Plan, contacts: Contacts, policy: WindowPolicy, now: dt.datetime) -> None:
    """What the calling window would do with each ready row if the run started ``now``."""
    zone_column = policy.window.timezone_column
    zones = contacts.frame[contacts.header.index(zone_column)] if zone_column else None
    for position in plan.ready_rows():
        decision = policy.decide(plan.e164.iat[position], now, zones.iat[position] if zones is not None else "")
        if decision.action == "skip":
            plan.status[position], plan.error[position] = Status.OUTSIDE_WINDOW, decision.reason
        elif decision.action == "wait":
            plan.error[position] = decision.reason
        elif decision.scheduled_for:
            plan.error[position] = f"would be scheduled for {decision.scheduled_for}"


def _write(contacts: Contacts, results: dict, out: Path) -> Path:
    try:
        return write_report(contacts, results, out)
    except OSError as error:
        raise InputError(f"cannot write the report {out} ({error.strerror or error}); choose another --out") from None


async def _dispatch(campaign: Campaign, calls: CallFactory, journal: Journal, retry: RetryPolicy,
                    api_key: str | None, on_progress: Callable[[DispatchResult, int], None] | None,
                    wall_clock: Callable[[], float]) -> DispatchResult:
    total = journal.count_pending()
    async with AsyncExitStack() as stack:
        base_url = campaign.base_url
        if campaign.uses_sandbox:
            api_key = secrets.token_urlsafe(16)
            sandbox = Sandbox(SandboxConfig(token=api_key, **campaign.sandbox))
            base_url = (await stack.enter_async_context(sandbox)).url
        provider_class = PROVIDERS[campaign.provider]
        provider: Provider = provider_class(base_url=base_url or provider_class.default_base_url,
                                            api_key=api_key, agent_id=campaign.agent_id, wall_clock=wall_clock)
        session = await stack.enter_async_context(client_session(campaign.concurrency))
        dispatcher = Dispatcher(
            provider, journal, calls, pacer=Pacer(campaign.rate), retry=retry, concurrency=campaign.concurrency,
            window=campaign.window_policy(), wall_clock=wall_clock,
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
