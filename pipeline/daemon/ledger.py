"""The daemon's memory: which photo was done with which settings, in SQLite.

A job is identified by *what* is processed, not where the file sits: the photo's
content hash, the preset name and a hash of the preset's effective settings. So
the same photo dropped again unchanged is recognised (and not redone), while a
changed preset makes it new work. States: queued -> running -> done | failed; a
job found ``running`` at start was interrupted (kill -9, power loss) and goes
back to ``queued``.

WAL mode lets ``photostyle status`` read while the daemon writes. Each thread
gets its own connection (sqlite3 connections must not cross threads).

File names are bytes, not text: paths are stored as the file system's bytes
(``os.fsencode``), so a Latin-1 name from an old NAS is kept exactly. Every
SQLite failure (disk full, read-only, corrupt) surfaces as :class:`LedgerError`
naming the file, so the daemon can keep the photo and retry instead of dying.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PhotostyleError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key           TEXT PRIMARY KEY,     -- content_hash:preset:settings_hash
    content_hash  TEXT NOT NULL,
    preset        TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    source        BLOB NOT NULL,        -- where the photo was when last seen (file-system bytes)
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    crashes       INTEGER NOT NULL DEFAULT 0,  -- times the process or its worker died with it in flight
    created       REAL NOT NULL,
    updated       REAL NOT NULL,
    output        BLOB,                 -- the result, recorded as soon as it has its name
    error         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated);
"""

STATES = ("queued", "running", "done", "failed")
# Columns added after the first release: (name, definition) for ALTER TABLE on an older ledger.
ADDED_COLUMNS = (("crashes", "INTEGER NOT NULL DEFAULT 0"),)


@dataclass(frozen=True)
class JobRecord:
    """One row of the ledger."""

    key: str
    content_hash: str
    preset: str
    settings_hash: str
    job_id: str
    source: str
    state: str
    attempts: int
    crashes: int
    created: float
    updated: float
    output: str | None
    error: str | None


def job_key(content_hash: str, preset: str, settings_hash: str) -> str:
    return f"{content_hash}:{preset}:{settings_hash}"


class LedgerError(PhotostyleError):
    """The ledger cannot be read or written (disk full, read-only, permissions, corrupt)."""

    exit_code = 2

    def __init__(self, path: Path, reason: str, *, corrupt: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.corrupt = corrupt


def _path_value(path: Path | str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _text_value(text: str | None) -> str | None:
    """Error texts may quote non-UTF-8 names (lone surrogates): keep them storable and readable."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _record(row: sqlite3.Row) -> JobRecord:
    values: dict[str, Any] = dict(row)
    for name in ("source", "output"):
        if isinstance(values[name], bytes):
            values[name] = os.fsdecode(values[name])
    return JobRecord(**values)


_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt")


class Ledger:
    """Thread-safe access to the jobs table (one connection per thread)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open (and with ``create``, make) the ledger; LedgerError names the file and the reason."""
        self.path = path
        self._local = threading.local()
        with self._errors():
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._connection().executescript(SCHEMA)  # executescript manages its own transaction
                self._add_missing_columns()
            else:
                self._connection().execute("SELECT 1 FROM jobs LIMIT 1").fetchall()

    def _add_missing_columns(self) -> None:
        """Bring a ledger written by an older photostyle up to this schema (its rows stay)."""
        db = self._connection()
        have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, definition in ADDED_COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn sqlite3's and the OS's errors into one LedgerError naming this ledger."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            raise LedgerError(self.path, message, corrupt=any(m in message for m in _CORRUPT_MARKERS)) from exc
        except OSError as exc:
            raise LedgerError(self.path.parent, exc.strerror or str(exc)) from exc

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._errors():
            return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- reading -------------------------------------------------------------------

    def get(self, key: str) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE key = ?", (key,))
        return _record(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def recent(self, state: str, limit: int = 5) -> list[JobRecord]:
        rows = self._query("SELECT * FROM jobs WHERE state = ? ORDER BY updated DESC LIMIT ?", (state, limit))
        return [_record(row) for row in rows]

    def interrupted(self) -> list[JobRecord]:
        """Jobs left ``running`` by a crash (kill -9, power loss), for recovery at start."""
        return [_record(row) for row in self._query("SELECT * FROM jobs WHERE state = 'running'")]

    # -- writing -------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Jobs still ``running`` (a crash) go back to ``queued``, each counting a crash; returns how many.

        :mod:`pipeline.daemon.recovery` first completes those whose result was already published.
        The count survives restarts, so a photo that kills the process (an out-of-memory
        kill under ``MemoryMax=``) fails after ``executor.max_attempts`` instead of
        crash-looping the daemon.
        """
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', output = NULL, crashes = crashes + 1, updated = ? "
                "WHERE state = 'running'", (time.time(),)
            ).rowcount

    def note_crash(self, key: str) -> None:
        """The worker running this job died (a Ray worker lost): one more crash against it."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET crashes = crashes + 1, updated = ? WHERE key = ?", (time.time(), key))

    def enqueue(self, key: str, content_hash: str, preset: str, settings_hash: str, job_id: str,
                source: Path | str) -> None:
        """Record a job as queued (a new one, or a retry of a failed or interrupted one).

        A photo moved back from ``failed/`` by its owner starts with no crashes counted.
        """
        now = time.time()
        with self._transaction() as db:
            db.execute(
                """INSERT INTO jobs (key, content_hash, preset, settings_hash, job_id, source, state, created, updated)
                   VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)
                   ON CONFLICT (key) DO UPDATE SET state = 'queued', source = excluded.source,
                       job_id = excluded.job_id, updated = excluded.updated, error = NULL, output = NULL,
                       crashes = CASE WHEN jobs.state = 'failed' THEN 0 ELSE jobs.crashes END""",
                (key, content_hash, preset, settings_hash, job_id, _path_value(source), now, now),
            )

    def _set(self, key: str, state: str, **fields: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = list(fields.values())
        sql = f"UPDATE jobs SET state = ?, updated = ?{', ' + assignments if assignments else ''} WHERE key = ?"
        with self._transaction() as db:
            db.execute(sql, [state, time.time(), *values, key])

    def mark_running(self, key: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated = ? WHERE key = ?",
                (time.time(), key),
            )

    def mark_output(self, key: str, output: Path) -> None:
        """The result has its final name: a crash from here on is completed at the next start, not redone."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET output = ?, updated = ? WHERE key = ?", (_path_value(output), time.time(), key))

    def mark_done(self, key: str, output: Path | str) -> None:
        self._set(key, "done", output=_path_value(output), error=None)

    def mark_failed(self, key: str, error: str) -> None:
        self._set(key, "failed", error=_text_value(error))

    def forget(self, key: str) -> None:
        """Drop a job whose photo was deleted or replaced before it ran."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE key = ? AND state != 'done'", (key,))

    def record_failure(self, source: Path, preset: str, error: str) -> None:
        """Record a file that failed before it could be fingerprinted (symlink, FIFO, unreadable)."""
        marker = _text_value(f"file:{source}:{time.time_ns()}") or ""
        self.enqueue(marker, marker, preset, "-", "-", source)
        self.mark_failed(marker, error)

    def mark_queued(self, key: str, error: str | None = None) -> None:
        """Back to the queue: abandoned at shutdown, or waiting to retry (``error`` says why)."""
        self._set(key, "queued", error=_text_value(error), output=None)


class NoLedger:
    """The ledger's writing side for a one-off ``photostyle process``: remembers nothing, never fails.

    The coordinator (:class:`~pipeline.daemon.dispatch.Dispatcher`) is the same for the
    daemon and for ``process``; only the daemon keeps a record across runs.
    """

    def mark_running(self, key: str) -> None: ...
    def mark_output(self, key: str, output: Path) -> None: ...
    def mark_done(self, key: str, output: Path | str) -> None: ...
    def mark_failed(self, key: str, error: str) -> None: ...
    def mark_queued(self, key: str, error: str | None = None) -> None: ...
    def note_crash(self, key: str) -> None: ...
    def forget(self, key: str) -> None: ...
