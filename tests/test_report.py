"""The report: every input row and cell untouched, then the result columns."""

from __future__ import annotations

import codecs
import csv

import pytest

from dialer.contacts import load_contacts
from dialer.report import RESULT_COLUMNS, result_headers, write_report


def results(n: int, status: str = "ready") -> dict[str, list[str]]:
    return {"phone_e164": ["+14155552671"] * n, "status": [status] * n, "call_id": [""] * n,
            "attempts": ["0"] * n, "error": [""] * n}


def read_back(path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_input_columns_come_first_verbatim_then_results(write_csv, tmp_path):
    rows = [["Name", "Phone", "Name", "Note"],
            ["Zoë", "415-555-2671", "dup header", 'a "quoted", multi\r\nline cell'],
            ["  spaced  ", "+1 415 555 2671", "", "=1+1"]]
    contacts = load_contacts(write_csv(rows))
    out = write_report(contacts, results(2), tmp_path / "out" / "report.csv")
    assert read_back(out) == [
        ["Name", "Phone", "Name", "Note", *RESULT_COLUMNS],
        ["Zoë", "415-555-2671", "dup header", 'a "quoted", multi\r\nline cell', "+14155552671", "ready", "", "0", ""],
        ["  spaced  ", "+1 415 555 2671", "", "=1+1", "+14155552671", "ready", "", "0", ""],
    ]


def test_report_starts_with_a_utf8_bom(write_csv, tmp_path):
    contacts = load_contacts(write_csv([["Phone"], ["4155552671"]]))
    out = write_report(contacts, results(1), tmp_path / "r.csv")
    assert out.read_bytes().startswith(codecs.BOM_UTF8 + b'"Phone","phone_e164"')


def test_result_columns_that_clash_with_input_columns_are_prefixed():
    assert result_headers(["status", "Phone", "error"]) == [
        "phone_e164", "dialer_status", "call_id", "attempts", "dialer_error"]


def test_report_replaces_an_old_one_atomically_and_leaves_no_temp_file(write_csv, tmp_path):
    contacts = load_contacts(write_csv([["Phone"], ["4155552671"]]))
    out = tmp_path / "r.csv"
    out.write_text("old report")
    write_report(contacts, results(1, "invalid"), out)
    assert read_back(out)[1][2] == "invalid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.csv", "r.csv"]


def test_results_must_cover_every_row(write_csv, tmp_path):
    contacts = load_contacts(write_csv([["Phone"], ["4155552671"], ["2125550100"]]))
    with pytest.raises(ValueError, match="phone_e164 has 1 values for 2 rows"):
        write_report(contacts, results(1), tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()
