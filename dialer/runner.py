"""``run_campaign``: load, plan, (call,) and report. The CLI is a thin layer over this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dialer.campaign import Campaign
from dialer.contacts import Contacts, load_contacts
from dialer.errors import InputError, UsageError
from dialer.plan import Plan, plan_contacts
from dialer.report import write_report

__all__ = ["RunResult", "run_campaign"]


@dataclass
class RunResult:
    """What a run did: the rows it read, what became of each, and where the report is."""

    contacts: Contacts
    plan: Plan
    report: Path


def run_campaign(campaign: Campaign) -> RunResult:
    """Run ``campaign`` and write its report; raise a ``DialerError`` on user mistakes."""
    contacts = load_contacts(campaign.contacts, sheet=campaign.sheet, phone_column=campaign.phone_column)
    plan = plan_contacts(contacts, campaign.region)
    if not campaign.dry_run:
        raise UsageError("placing calls is not available yet; add --dry-run to check the file")
    results = {
        "phone_e164": plan.e164,
        "status": plan.status,
        "call_id": np.full(len(plan), "", dtype=object),
        "attempts": np.full(len(plan), "0", dtype=object),
        "error": plan.error,
    }
    try:
        report = write_report(contacts, results, campaign.out)
    except OSError as error:
        raise InputError(f"cannot write the report {campaign.out} ({error.strerror or error}); "
                         "choose another --out") from None
    return RunResult(contacts, plan, report)
