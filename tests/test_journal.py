"""The journal: what a crash can leave behind, and how a resume resolves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dialer.contacts import load_contacts
from dialer.errors import UsageError
from dialer.journal import Journal, PendingRow, fingerprint, journal_path
from dialer.plan import plan_contacts

DAY = 24 * 3600.0


@pytest.fixture
def journal(write_csv, tmp_path) -> Journal:
    contacts = load_contacts(write_csv([["Phone"], ["4155552671"], ["n/a"], ["2125550100"], ["415 555 2671"], ["3125550199"]]))
    opened = Journal.open(tmp_path / "r.csv.journal", "fp")
    opened.create(plan_contacts(contacts, "US"), "fp")
    return opened


def states(journal: Journal) -> list[tuple]:
    return journal._db.execute("SELECT row, state, status, attempts FROM rows ORDER BY row").fetchall()


def test_journal_sits_beside_the_report():
    assert journal_path(Path("reports/x.csv")) == Path("reports/x.csv.journal")


def test_create_stores_ready_rows_pending_and_the_rest_done(journal):
    assert states(journal) == [(0, "pending", "", 0), (1, "done", "invalid", 0), (2, "pending", "", 0),
                               (3, "done", "duplicate", 0), (4, "pending", "", 0)]
    assert journal.count_pending() == 3


def test_pending_rows_come_in_file_order_in_chunks(journal):
    assert list(journal.pending(chunk=2)) == [PendingRow(0, "+14155552671", 0, None),
                                              PendingRow(2, "+12125550100", 0, None),
                                              PendingRow(4, "+13125550199", 0, None)]


def test_claims_are_committed_with_key_attempts_and_first_send_time(journal, tmp_path):
    journal.claim(0, "key-0", now=100.0)
    journal.claim(0, "key-0", now=105.0)
    journal.commit()
    other = sqlite3.connect(tmp_path / "r.csv.journal")  # another connection sees it: committed
    assert other.execute("SELECT state, attempts, idempotency_key, first_sent FROM rows WHERE row = 0").fetchone() == (
        "sending", 2, "key-0", 100.0)


def test_recover_replays_recent_sending_rows_where_replays_are_harmless(journal):
    journal.claim(0, "k", now=1000.0)
    journal.claim(2, "k", now=1000.0 - DAY)
    assert journal.recover(replay_safe=True, now=1000.0, replay_window=23 * 3600) == 1
    assert states(journal)[0] == (0, "pending", "", 1)
    assert states(journal)[2] == (2, "done", "unknown", 1)


def test_recover_marks_sending_rows_unknown_without_idempotency(journal):
    journal.claim(0, "k", now=1000.0)
    assert journal.recover(replay_safe=False, now=1000.0, replay_window=23 * 3600) == 1
    assert states(journal)[0] == (0, "done", "unknown", 1)


def test_resend_unknown_puts_unknown_rows_back(journal):
    journal.claim(0, "k", now=1.0)
    journal.finish(0, "unknown", error="lost", now=2.0)
    assert journal.resend_unknown() == 1
    assert states(journal)[0] == (0, "pending", "", 1)


def test_results_say_what_became_of_every_row(journal):
    journal.claim(0, "k", now=1.0)
    journal.finish(0, "initiated", call_id="c-1", now=2.0)
    journal.claim(2, "k", now=1.0)
    results = journal.results()
    assert results["status"].tolist() == ["initiated", "invalid", "unknown", "duplicate", "not_attempted"]
    assert results["call_id"].tolist() == ["c-1", "", "", "", ""]
    assert results["attempts"].tolist() == ["1", "0", "1", "0", "0"]
    assert results["error"].tolist() == [
        "", "not a phone number", "a request for this row may have created a call, and the run stopped before "
                                  "that was settled; run again to resolve it",
        "same number as row 2", ""]


def test_a_journal_made_for_other_contacts_is_refused(journal, tmp_path):
    journal.close()
    with pytest.raises(UsageError) as error:
        Journal.open(tmp_path / "r.csv.journal", "another fingerprint")
    assert str(error.value) == (
        f"{tmp_path / 'r.csv.journal'} was made for another contacts file or other settings; to start afresh "
        "run again with --restart (rows already called may be called again), or choose another --out")


def test_restart_starts_a_new_journal(journal, tmp_path):
    journal.close()
    fresh = Journal.open(tmp_path / "r.csv.journal", "another fingerprint", restart=True)
    assert fresh.is_new and fresh.count_pending() == 0


def test_reopening_with_the_same_fingerprint_resumes(journal, tmp_path):
    journal.close()
    again = Journal.open(tmp_path / "r.csv.journal", "fp")
    assert not again.is_new and again.count_pending() == 3


def test_fingerprint_follows_file_bytes_and_settings(write_csv):
    path = write_csv([["Phone"], ["4155552671"]])
    first = fingerprint(path, {"region": "US"})
    assert fingerprint(path, {"region": "US"}) == first
    assert fingerprint(path, {"region": "GB"}) != first
    path.write_text("Phone\n4155552672\n")
    assert fingerprint(path, {"region": "US"}) != first


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "r.csv.journal"
    path.write_bytes(b"not a database at all, just some bytes" * 100)
    with pytest.raises(UsageError, match="is not a dialer journal"):
        Journal.open(path, "fp")


def test_a_journal_from_another_version_is_refused_with_the_fix(journal, tmp_path):
    journal._db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    journal.close()
    with pytest.raises(UsageError) as error:
        Journal.open(tmp_path / "r.csv.journal", "fp")
    assert str(error.value) == (f"{tmp_path / 'r.csv.journal'} was made by another version of dialer; "
                                "run again with --restart to start afresh, or choose another --out")


def test_a_replay_postponed_for_its_window_stays_in_doubt_and_pending(journal):
    journal.claim(0, "k", now=1.0)  # no answer: kept for a replay
    journal.postpone(0, until=500.0, reason="waiting for the calling window", now=2.0)
    assert journal._db.execute("SELECT state, in_doubt, not_before FROM rows WHERE row = 0").fetchone() == (
        "pending", 1, 500.0)
    assert [row.in_doubt for row in journal.pending(now=600.0)] == [True, False, False]


def test_a_journal_that_cannot_be_created_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match=r"cannot create the journal .*; choose another --out"):
        Journal.open(blocker / "r.csv.journal", "fp")


def test_closing_commits_what_was_recorded_and_closing_again_does_nothing(journal, tmp_path):
    journal.claim(0, "k", now=1.0)
    journal.close()
    journal.close()
    other = sqlite3.connect(tmp_path / "r.csv.journal")
    assert other.execute("SELECT state FROM rows WHERE row = 0").fetchone() == ("sending",)
