"""dialer: call every contact in a spreadsheet once, at a safe pace, with a report for every row."""

from dialer.campaign import Campaign
from dialer.contacts import Contacts, load_contacts
from dialer.errors import ColumnError, DialerError, FatalProviderError, InputError, UsageError
from dialer.phones import normalize_number, normalize_phones
from dialer.plan import Plan, Status, plan_contacts
from dialer.report import write_report
from dialer.runner import RunResult, run_campaign

__all__ = [
    "Campaign", "Contacts", "load_contacts", "normalize_number", "normalize_phones", "Plan",
    "Status", "plan_contacts", "write_report", "RunResult", "run_campaign",
    "DialerError", "UsageError", "InputError", "ColumnError", "FatalProviderError",
]
