"""Write the report: every input row, cells untouched, followed by the result columns.

The file is UTF-8 with a BOM (so Excel opens it right), every cell quoted, written to a temporary
file beside the target and renamed over it, so a reader never sees half a report. Cells the tool
writes from a provider's text (``call_id``, ``error``) never start like a formula; the input's own
cells are left exactly as they were.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv

from dialer.contacts import Contacts

__all__ = ["RESULT_COLUMNS", "result_headers", "write_report", "neutralize_formulas"]

RESULT_COLUMNS = ("phone_e164", "status", "call_id", "attempts", "error")
_OUTSIDE_TEXT = ("call_id", "error")  # may hold a provider's words
_FORMULA_START = r"^[=+\-@\t\r]"


def neutralize_formulas(cells: pd.Series) -> pd.Series:
    """Prefix ``'`` to cells a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR)."""
    risky = cells.str.contains(_FORMULA_START, regex=True)
    return cells.where(~risky, "'" + cells)


def result_headers(input_header: Sequence[str]) -> list[str]:
    """The result column names, each prefixed ``dialer_`` if the input already uses it."""
    taken = set(input_header)
    return [f"dialer_{name}" if name in taken else name for name in RESULT_COLUMNS]


def write_report(contacts: Contacts, results: Mapping[str, pd.Series | np.ndarray | Sequence[str]],
                 out: str | Path) -> Path:
    """Write ``contacts`` plus ``results`` (one array per name in ``RESULT_COLUMNS``) to ``out``."""
    out = Path(out)
    missing = [name for name in RESULT_COLUMNS if name not in results]
    if missing:
        raise ValueError(f"results lack the columns {missing}")
    columns = [pa.array(contacts.frame[i]) for i in range(len(contacts.header))]
    for name in RESULT_COLUMNS:
        column = results[name]
        if len(column) != len(contacts):
            raise ValueError(f"{name} has {len(column)} values for {len(contacts)} rows")
        text = pd.Series(column, dtype="str")
        if name in _OUTSIDE_TEXT:
            text = neutralize_formulas(text)
        columns.append(pa.array(text, type=pa.string()))
    table = pa.Table.from_arrays(columns, names=[*contacts.header, *result_headers(contacts.header)])
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as stream:
            stream.write(codecs.BOM_UTF8)
            csv.write_csv(table, stream, csv.WriteOptions(batch_size=65536))
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out
