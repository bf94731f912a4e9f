"""A full disk when the journal commits the claims that requests wait for: nothing is sent, the
error is the disk's, and once there is room again the journal works and the report can be written.

The disk fills for real: a child process runs the dispatcher under a file-size limit
(``RLIMIT_FSIZE``) that stops the journal from growing by a single byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent('''
    import asyncio, json, resource, signal, sqlite3, sys
    from pathlib import Path
    from dialer.contacts import load_contacts
    from dialer.dispatch import CallFactory, Dispatcher
    from dialer.journal import Journal
    from dialer.pacing import Pacer
    from dialer.plan import plan_contacts
    from dialer.providers.base import Kind, Outcome, Provider
    from dialer.retry import RetryPolicy

    class Recording(Provider):
        name, default_base_url, replay_safe = "recording", None, True
        sent = []

        def request(self, call):
            raise AssertionError("no HTTP here")

        def classify(self, status, headers, body):
            raise AssertionError("no HTTP here")

        async def place(self, session, call, *, on_sent=None):
            self.sent.append(call.row)
            return Outcome(Kind.CREATED, call_id=f"call-{call.row}", status="initiated")

    folder = Path(sys.argv[1])
    contacts = load_contacts(folder / "contacts.csv")
    journal = Journal.open(folder / "report.csv.journal", "identity")
    journal.create(plan_contacts(contacts, "US"), "identity")
    files = [folder / "report.csv.journal", folder / "report.csv.journal-wal"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(f.stat().st_size for f in files), resource.RLIM_INFINITY))
    provider = Recording(base_url="http://unused.invalid", api_key="k", agent_id=1)
    dispatcher = Dispatcher(provider, journal, CallFactory(contacts, campaign_id="c", agent_id=1),
                            pacer=Pacer(None), retry=RetryPolicy(), concurrency=4)
    try:
        asyncio.run(dispatcher.run(None))
        error = None
    except sqlite3.OperationalError as raised:
        error = str(raised)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    statuses = journal.results()["status"].tolist()
    journal.close()
    on_disk = sqlite3.connect(files[0]).execute("SELECT state, count(*) FROM rows GROUP BY state").fetchall()
    print(json.dumps({"error": error, "sent": provider.sent, "on_disk": on_disk, "statuses": statuses}))
''')


def test_a_full_disk_at_the_shared_commit_sends_nothing_and_leaves_the_journal_usable(write_csv):
    contacts = write_csv([["Name", "Phone"]] + [[f"P{n}", f"(415) 555-{n:04d}"] for n in range(20)])
    child = subprocess.run([sys.executable, "-c", CHILD, str(contacts.parent)], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome.pop("error") in ("database or disk is full", "disk I/O error")  # ENOSPC, EFBIG
    assert outcome == {"sent": [], "on_disk": [["pending", 20]], "statuses": ["not_attempted"] * 20}
