"""The journal: a SQLite file beside the report that makes every run resumable.

One row per input row. ``state`` moves ``pending -> sending -> done`` (or back to ``pending``
when a request provably created nothing). ``deferred`` rows were left for a later run (outside
the calling window, or given up on); the next run puts them back in the queue. A ``pending`` row
may carry a ``not_before`` time (waiting for its calling window).

A row is committed as ``sending`` *before* its request leaves. A row that was ``sending`` and
got no definite answer may have been called: it is ``in_doubt`` from then on, whatever happens
to later requests for it, until a definite answer (created, 409, rejected) settles it. An
in-doubt row is only ever sent again as a replay with the same idempotency key while the
provider still remembers it (``recover`` and the dispatcher check its age), and it is never
reported as not called (``results`` says ``unknown``).

``claim`` marks a row ``sending``; it succeeds only if the row was not sent since it was read,
so a stale copy of a row can never be sent. The caller commits (``commit()``) before the
request leaves: one commit makes every claim and outcome recorded since the last one durable
(WAL, ``synchronous=NORMAL``: a ``kill -9`` loses nothing that reached the operating system), so
claims made together share it. A crash can lose only claims whose requests had not left, and
the record of outcomes, whose rows are then ``sending``, which ``recover`` makes safe.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dialer.errors import UsageError
from dialer.plan import Plan, Status
from dialer.report import RESULT_COLUMNS

__all__ = ["Journal", "PendingRow", "fingerprint", "journal_path"]

_SCHEMA_VERSION = "2"  # bump when the rows table changes
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    row INTEGER PRIMARY KEY,     -- position in the contacts file, 0 = first row after the header
    e164 TEXT NOT NULL,
    state TEXT NOT NULL,         -- pending | sending | done | deferred
    status TEXT NOT NULL,        -- the report's status once done (invalid, initiated, ...)
    attempts INTEGER NOT NULL DEFAULT 0,
    call_id TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL DEFAULT '',
    first_sent REAL,             -- wall-clock time of the first request for this row
    in_doubt INTEGER NOT NULL DEFAULT 0,  -- 1: a request for it may have created a call
    not_before REAL,             -- a pending row is not sent before this wall-clock time
    updated REAL
);
CREATE INDEX IF NOT EXISTS rows_open ON rows(row) WHERE state IN ('pending', 'sending');
"""


_UNSETTLED = "(state = 'sending' OR (in_doubt AND state IN ('pending', 'deferred')))"
_STOPPED_WHILE_SENDING = ("a request for this row may have created a call, and the run stopped before "
                          "that was settled; run again to resolve it")


@dataclass(frozen=True)
class PendingRow:
    row: int
    e164: str
    attempts: int
    first_sent: float | None
    in_doubt: bool = False


def journal_path(report: Path) -> Path:
    """``reports/x.csv`` -> ``reports/x.csv.journal``."""
    return report.with_name(report.name + ".journal")


def fingerprint(contacts: Path, settings: Mapping[str, Any]) -> str:
    """A hash of the contacts file's bytes and the settings that decide who is called how."""
    digest = hashlib.sha256()
    with contacts.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Journal:
    """Open with ``Journal.open``; ``is_new`` tells whether ``create`` must fill it."""

    def __init__(self, path: Path, connection: sqlite3.Connection, is_new: bool) -> None:
        self.path = path
        self._db = connection
        self.is_new = is_new
        self._open = True

    def __repr__(self) -> str:
        return f"<Journal {self.path} {'new' if self.is_new else 'resumed'}>"

    @classmethod
    def open(cls, path: Path, identity: str, *, restart: bool = False) -> Journal:
        """Open or create the journal at ``path``; refuse one made for other contacts or settings."""
        if restart:
            for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                stale.unlink(missing_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except OSError as error:
            raise UsageError(f"cannot create the journal {path} ({error.strerror or error}); "
                             "choose another --out") from None
        except sqlite3.OperationalError as error:
            raise UsageError(f"cannot open the journal {path} ({error}); choose another --out") from None
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{path} is not a dialer journal ({error}); move it away or use --restart") from None
        stored = connection.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if stored is None:
            return cls(path, connection, is_new=True)
        schema = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema is None or schema[0] != _SCHEMA_VERSION:
            connection.close()
            raise UsageError(f"{path} was made by another version of dialer; run again with --restart "
                             "to start afresh, or choose another --out")
        if stored[0] != identity:
            connection.close()
            raise UsageError(
                f"{path} was made for another contacts file or other settings; to start afresh "
                "run again with --restart (rows already called may be called again), "
                "or choose another --out")
        return cls(path, connection, is_new=False)

    def create(self, plan: Plan, identity: str) -> None:
        """Store the plan: ready rows ``pending``, the others ``done`` with their status."""
        ready = plan.status == Status.READY
        state = np.where(ready, "pending", "done")
        status = np.where(ready, "", plan.status)
        records = zip(range(len(plan)), plan.e164, map(str, state), map(str, status), plan.error)  # lazily
        with self._transaction():
            self._db.executemany("INSERT INTO rows (row, e164, state, status, error) VALUES (?, ?, ?, ?, ?)", records)
            self._db.execute("INSERT INTO meta VALUES ('fingerprint', ?), ('schema', ?)", (identity, _SCHEMA_VERSION))
        self.is_new = False

    def recover(self, *, replay_safe: bool, now: float, replay_window: float) -> int:
        """Put deferred rows back in the queue, and resolve rows that may have been called;
        return how many became ``unknown``.

        Rows a crash left ``sending`` are in doubt. An in-doubt row goes back to ``pending``
        (its next request is a replay with the same key) only where a replay is harmless and the
        key is still remembered; else it becomes ``unknown``.
        """
        with self._transaction():
            self._db.execute("UPDATE rows SET in_doubt = 1 WHERE state = 'sending'")
            self._db.execute("UPDATE rows SET state = 'pending', status = '', error = '' "
                             "WHERE state = 'deferred' AND in_doubt = 0")
            if replay_safe:
                self._db.execute("UPDATE rows SET state = 'pending', status = '' WHERE in_doubt = 1 "
                                 "AND state IN ('sending', 'pending', 'deferred') AND first_sent > ?",
                                 (now - replay_window,))
            cursor = self._db.execute(
                "UPDATE rows SET state = 'done', status = ?, error = ?, updated = ? "
                "WHERE in_doubt = 1 AND state IN ('sending', 'pending', 'deferred') "
                "AND NOT (? AND first_sent > ?)",
                (Status.UNKNOWN, "a request for this row may have created a call; it may or may not exist "
                                 "(--resend-unknown sends it again)", now, replay_safe, now - replay_window))
        return cursor.rowcount

    def suppress(self, numbers: Iterable[str], status: str, reason: str, now: float) -> int:
        """Mark the rows still to call whose number is in ``numbers`` as ``status``; return how many.
        Rows that may already have been called become ``unknown`` instead, and are not sent either."""
        with self._transaction():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS suppressed (e164 TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM suppressed")
            self._db.executemany("INSERT OR IGNORE INTO suppressed VALUES (?)", ((n,) for n in numbers))
            matching = "state IN ('pending', 'deferred') AND e164 IN (SELECT e164 FROM suppressed)"
            self._db.execute(f"UPDATE rows SET state = 'done', status = ?, error = ?, updated = ? "
                             f"WHERE in_doubt = 1 AND {matching}",
                             (Status.UNKNOWN, f"may have been called before it was suppressed ({reason})", now))
            cursor = self._db.execute(f"UPDATE rows SET state = 'done', status = ?, error = ?, updated = ? "
                                      f"WHERE in_doubt = 0 AND {matching}", (status, reason, now))
        return cursor.rowcount

    def resend_unknown(self) -> int:
        """Put ``unknown`` rows back in the queue; return how many."""
        with self._transaction():
            cursor = self._db.execute("UPDATE rows SET state = 'pending', status = '', error = '', in_doubt = 0 "
                                      "WHERE state = 'done' AND status = ?", (Status.UNKNOWN,))
        return cursor.rowcount

    def count_pending(self) -> int:
        return self._db.execute("SELECT count(*) FROM rows WHERE state = 'pending'").fetchone()[0]

    def pending(self, now: float = float("inf"), chunk: int = 1000) -> Iterator[PendingRow]:
        """The ``pending`` rows due by ``now``, in file order, read lazily ``chunk`` at a time."""
        after = -1
        while True:
            batch = self._db.execute(
                "SELECT row, e164, attempts, first_sent, in_doubt FROM rows WHERE state = 'pending' AND row > ? "
                "AND (not_before IS NULL OR not_before <= ?) ORDER BY row LIMIT ?", (after, now, chunk)).fetchall()
            if not batch:
                return
            for row, e164, attempts, first_sent, in_doubt in batch:
                yield PendingRow(row, e164, attempts, first_sent, bool(in_doubt))
            after = batch[-1][0]

    def is_current(self, copy: PendingRow) -> bool:
        """Whether ``copy`` (read by an earlier ``pending``) still describes a pending row."""
        return self._db.execute("SELECT 1 FROM rows WHERE row = ? AND state = 'pending' AND attempts = ?",
                                (copy.row, copy.attempts)).fetchone() is not None

    def next_due(self, after: float) -> float | None:
        """The earliest ``not_before`` later than ``after`` among pending rows, if any."""
        return self._db.execute("SELECT min(not_before) FROM rows WHERE state = 'pending' AND not_before > ?",
                                (after,)).fetchone()[0]

    def postpone(self, row: int, until: float, reason: str, now: float) -> None:
        """Leave ``row`` pending, but not to be sent before ``until`` (a row being replayed stays
        in doubt)."""
        self._write("UPDATE rows SET in_doubt = in_doubt OR state = 'sending', state = 'pending', not_before = ?, "
                    "error = ?, updated = ? WHERE row = ?", (until, reason, now, row))

    def defer(self, row: int, status: str, reason: str, now: float) -> None:
        """Leave ``row`` for a later run; this run reports it as ``status`` (``unknown`` if it was
        being replayed: a request for it may have created a call)."""
        self._write("UPDATE rows SET in_doubt = in_doubt OR state = 'sending', state = 'deferred', status = ?, "
                    "error = ?, updated = ? WHERE row = ?", (status, reason, now, row))

    def claim(self, row: int, idempotency_key: str, now: float, *, attempts: int | None = None) -> bool:
        """Mark ``row`` ``sending`` for a request about to leave; ``commit()`` before it does.

        With ``attempts`` (as read with the row), the claim fails, and ``False`` is returned, if
        the row was sent or settled since: the caller holds a stale copy and must not send it.
        A row still ``sending`` had no definite answer: from now on it is in doubt."""
        cursor = self._write(
            "UPDATE rows SET in_doubt = in_doubt OR state = 'sending', state = 'sending', attempts = attempts + 1, "
            "idempotency_key = ?, first_sent = COALESCE(first_sent, ?), not_before = NULL, updated = ? "
            "WHERE row = ? AND state IN ('pending', 'sending') AND (? IS NULL OR attempts = ?)",
            (idempotency_key, now, now, row, attempts, attempts))
        return cursor.rowcount == 1

    def mark_pending(self, row: int, error: str, now: float) -> None:
        """The last request for ``row`` provably created nothing; it may be sent again."""
        self._write("UPDATE rows SET state = 'pending', error = ?, updated = ? WHERE row = ?", (error, now, row))

    def finish(self, row: int, status: str, *, call_id: str = "", error: str = "", now: float) -> None:
        """Record the final status of ``row``; any status but ``unknown`` settles a doubt."""
        self._write("UPDATE rows SET state = 'done', status = ?, call_id = ?, error = ?, updated = ?, "
                    "in_doubt = in_doubt AND ? WHERE row = ?", (status, call_id, error, now, status == Status.UNKNOWN, row))

    def commit(self) -> None:
        """Make every claim and outcome recorded so far durable. If that fails (a full disk), SQLite
        has rolled them back: the journal holds what the last commit did, and can be used again."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Cursor:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db.execute(sql, parameters)

    def results(self, chunk: int = 8192) -> dict[str, pd.Series]:
        """The report's result columns, one entry per row; unfinished rows say why.

        Read ``chunk`` rows at a time into Arrow arrays, so that a million rows stay small."""
        self.commit()
        cursor = self._db.execute(
            f"SELECT e164, CASE WHEN {_UNSETTLED} THEN ? WHEN state = 'pending' THEN ? ELSE status END, call_id, "
            f"CAST(attempts AS TEXT), CASE WHEN {_UNSETTLED} THEN ? ELSE error END FROM rows ORDER BY row",
            (Status.UNKNOWN, Status.NOT_ATTEMPTED, _STOPPED_WHILE_SENDING))
        columns: list[list[pa.Array]] = [[] for _ in RESULT_COLUMNS]
        while records := cursor.fetchmany(chunk):
            for index, values in enumerate(zip(*records)):
                columns[index].append(pa.array(values, type=pa.string()))
        return {name: pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(parts, type=pa.string())))
                for name, parts in zip(RESULT_COLUMNS, columns)}

    def close(self) -> None:
        """Commit what was recorded and close the file; closing it again does nothing."""
        if self._open:
            self.commit()
            self._db.close()
            self._open = False

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK on error, after committing what was recorded before."""
        self.commit()
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
