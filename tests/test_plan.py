"""Planning: each row is ready, invalid, or a duplicate of an earlier valid row."""

from __future__ import annotations

from dialer.contacts import load_contacts
from dialer.plan import plan_contacts


def test_statuses_numbers_and_reasons_per_row(write_csv):
    contacts = load_contacts(write_csv([
        ["Name", "Phone"],
        ["Ana", "(415) 555-2671"],    # row 2
        ["Ben", "n/a"],               # row 3
        ["Cy", "+1 415 555 2671"],    # row 4: same number as row 2
        ["Di", "212-555-0100 x7"],   # row 5
        ["Ed", "415.555.2671"],       # row 6: same number as row 2
        ["Fi", "n/a"],                # row 7: invalid, not a duplicate
    ]))
    plan = plan_contacts(contacts, "US")
    assert plan.e164.tolist() == ["+14155552671", "", "+14155552671", "+12125550100", "+14155552671", ""]
    assert plan.status.tolist() == ["ready", "invalid", "duplicate", "ready", "duplicate", "invalid"]
    assert plan.error.tolist() == ["", "not a phone number", "same number as row 2",
                                   "extension 7 dropped", "same number as row 2", "not a phone number"]
    assert plan.ready_rows().tolist() == [0, 3]


def test_counts_and_top_reasons(write_csv):
    contacts = load_contacts(write_csv([["Phone"], ["n/a"], [""], ["x"], ["4155552671"], ["4155552671"]]))
    plan = plan_contacts(contacts, "US")
    assert plan.counts() == {"invalid": 3, "ready": 1, "duplicate": 1}
    assert plan.top_reasons() == [("not a phone number", 2), ("empty", 1)]
