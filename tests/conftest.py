"""Shared helpers: write real contact files the way spreadsheets and editors do."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import pytest


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write rows as CSV: ``write_csv(rows, name="c.csv", delimiter=",", encoding="utf-8")``."""

    def write(rows: list[list[str]], name: str = "contacts.csv", delimiter: str = ",",
              encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(csv_text(rows, delimiter).encode(encoding))
        return path

    return write


@pytest.fixture
def write_xlsx(tmp_path: Path) -> Callable[..., Path]:
    """Write rows to an .xlsx with openpyxl; cells keep their Python types (int, float, str)."""
    import openpyxl

    def write(rows: list[list[Any]], name: str = "contacts.xlsx", sheets: dict[str, list[list[Any]]] | None = None) -> Path:
        book = openpyxl.Workbook()
        book.active.title = "Contacts"
        for row in rows:
            book.active.append(row)
        for title, sheet_rows in (sheets or {}).items():
            sheet = book.create_sheet(title)
            for row in sheet_rows:
                sheet.append(row)
        path = tmp_path / name
        book.save(path)
        return path

    return write
