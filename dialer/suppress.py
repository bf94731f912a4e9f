"""Numbers never to call: do-not-call lists, and numbers an earlier report already reached.

A do-not-call file is any file the contacts loader reads: a one-column list (with or without a
header) or a file with a phone column. Its numbers are normalized with the campaign's rules and
region, so ``(415) 555-2671`` in the list matches ``+1 415 555 2671`` in the contacts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dialer.contacts import find_phone_column, read_table
from dialer.errors import InputError
from dialer.phones import normalize_phones
from dialer.plan import Status
from dialer.report import RESULT_COLUMNS, result_headers

__all__ = ["do_not_call_numbers", "already_called_numbers"]

_CALLED = (Status.INITIATED, Status.SCHEDULED)


def do_not_call_numbers(paths: tuple[Path, ...], region: str) -> set[str]:
    """The E.164 numbers in every do-not-call file."""
    numbers: set[str] = set()
    for path in paths:
        header, frame, _ = read_table(path)
        if len(header) == 1:
            cells = pd.concat([pd.Series(header, dtype="str"), frame[0]], ignore_index=True)
        elif header:
            cells = frame[find_phone_column(header, source=f"do-not-call list {path}")]
        else:
            continue
        normalized = normalize_phones(cells, region)
        numbers.update(normalized.e164[normalized.valid].tolist())
    return numbers


def already_called_numbers(report: Path) -> set[str]:
    """The numbers an earlier dialer report says were initiated or scheduled."""
    header, frame, _ = read_table(report)
    first = len(header) - len(RESULT_COLUMNS)  # a report ends with its result columns
    if first < 0 or header[first:] != result_headers(header[:first]):
        raise InputError(f"{report}: not a dialer report (it does not end with the columns "
                         f"{','.join(RESULT_COLUMNS)}); check exclude_report")
    e164, status = frame[first + RESULT_COLUMNS.index("phone_e164")], frame[first + RESULT_COLUMNS.index("status")]
    return set(e164[status.isin(_CALLED)].tolist())
