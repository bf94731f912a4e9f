"""Decide, before any call, what happens to every row: its E.164 number and first status.

A row is ``invalid`` (no valid number), ``duplicate`` (same number as an earlier valid row) or
``ready`` to be called. Later steps only ever change ``ready`` rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dialer.contacts import Contacts
from dialer.phones import normalize_phones

__all__ = ["Status", "Plan", "plan_contacts", "count_statuses", "top_reasons", "FIRST_DATA_ROW"]

FIRST_DATA_ROW = 2
"""The row number of the first contact as a person counts rows: the header is row 1."""


class Status:
    """The status values a report row can have."""

    READY = "ready"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    DNC = "dnc"
    EXCLUDED = "excluded"
    OUTSIDE_WINDOW = "outside_window"
    INITIATED = "initiated"
    SCHEDULED = "scheduled"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_ATTEMPTED = "not_attempted"


@dataclass
class Plan:
    """Per-row arrays, aligned with ``Contacts.frame``: number, status, and a note or reason."""

    e164: pd.Series
    status: np.ndarray
    error: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def counts(self) -> Counter[str]:
        """How many rows have each status."""
        return count_statuses(self.status)

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most common reasons rows are invalid."""
        return top_reasons(self.status, self.error, limit=limit)

    def suppress(self, numbers: set[str], status: str, reason: str) -> int:
        """Give ready rows whose number is in ``numbers`` the status ``status``; return how many."""
        hit = (self.status == Status.READY) & self.e164.isin(numbers).to_numpy(dtype=bool)
        self.status[hit] = status
        self.error[hit] = reason
        return int(hit.sum())

    def ready_rows(self) -> np.ndarray:
        """Positions of the rows that should be called."""
        return np.flatnonzero(self.status == Status.READY)


def count_statuses(status: np.ndarray | pd.Series) -> Counter[str]:
    """How many rows have each status."""
    return Counter(pd.Series(status, dtype="str").value_counts().to_dict())


def top_reasons(status: np.ndarray | pd.Series, error: np.ndarray | pd.Series, *, of: str = Status.INVALID,
                limit: int = 5) -> list[tuple[str, int]]:
    """The most common ``error`` texts among rows whose status is ``of``."""
    errors = pd.Series(error, dtype="str")
    return list(errors[(pd.Series(status, dtype="str") == of).to_numpy()].value_counts().head(limit).items())


def plan_contacts(contacts: Contacts, region: str) -> Plan:
    """Normalize every number, then mark invalid rows and repeats of an earlier valid number."""
    normalized = normalize_phones(contacts.phones, region)
    e164, error = normalized.e164, normalized.note.copy()
    valid = normalized.valid
    status = np.full(len(e164), Status.INVALID, dtype=object)  # one shared string per status, not one per row
    status[valid] = Status.READY

    codes, _ = pd.factorize(e164)
    _, first_position = np.unique(codes, return_index=True)
    first_row = first_position[codes]
    duplicate = valid & (first_row != np.arange(len(e164)))
    status[duplicate] = Status.DUPLICATE
    for position in np.flatnonzero(duplicate):
        error[position] = f"same number as row {first_row[position] + FIRST_DATA_ROW}"
    return Plan(e164=e164, status=status, error=error)
