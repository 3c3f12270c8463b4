"""The daemon's memory: which photo was done with which settings, in SQLite.

A job is identified by *what* is processed, not where the file sits: the photo's
content hash, the preset name and a hash of the preset's effective settings. So
the same photo dropped again unchanged is recognised (and not redone), while a
changed preset makes it new work. States: queued -> running -> done | failed; a
job found ``running`` at start was interrupted (kill -9, power loss) and goes
back to ``queued``.

WAL mode lets ``photostyle status`` read while the daemon writes. Each thread
gets its own connection (sqlite3 connections must not cross threads).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key           TEXT PRIMARY KEY,     -- content_hash:preset:settings_hash
    content_hash  TEXT NOT NULL,
    preset        TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    source        TEXT NOT NULL,        -- where the photo was when last seen
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    created       REAL NOT NULL,
    updated       REAL NOT NULL,
    output        TEXT,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated);
"""

STATES = ("queued", "running", "done", "failed")


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
    created: float
    updated: float
    output: str | None
    error: str | None


def job_key(content_hash: str, preset: str, settings_hash: str) -> str:
    return f"{content_hash}:{preset}:{settings_hash}"


class Ledger:
    """Thread-safe access to the jobs table (one connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(SCHEMA)  # executescript manages its own transaction

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
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- reading -------------------------------------------------------------------

    def get(self, key: str) -> JobRecord | None:
        row = self._connection().execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return JobRecord(**dict(row)) if row else None

    def counts(self) -> dict[str, int]:
        rows = self._connection().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def recent(self, state: str, limit: int = 5) -> list[JobRecord]:
        rows = self._connection().execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY updated DESC LIMIT ?", (state, limit)
        ).fetchall()
        return [JobRecord(**dict(row)) for row in rows]

    # -- writing -------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """At start: jobs left ``running`` by a crash go back to ``queued``; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', updated = ? WHERE state = 'running'", (time.time(),)
            ).rowcount

    def enqueue(self, key: str, content_hash: str, preset: str, settings_hash: str, job_id: str, source: str) -> None:
        """Record a job as queued (a new one, or a retry of a failed or interrupted one)."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                """INSERT INTO jobs (key, content_hash, preset, settings_hash, job_id, source, state, created, updated)
                   VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)
                   ON CONFLICT (key) DO UPDATE SET state = 'queued', source = excluded.source,
                       job_id = excluded.job_id, updated = excluded.updated, error = NULL""",
                (key, content_hash, preset, settings_hash, job_id, source, now, now),
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

    def mark_done(self, key: str, output: str) -> None:
        self._set(key, "done", output=output, error=None)

    def mark_failed(self, key: str, error: str) -> None:
        self._set(key, "failed", error=error)

    def forget(self, key: str) -> None:
        """Drop a job whose photo was deleted or replaced before it ran."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE key = ? AND state != 'done'", (key,))

    def record_failure(self, source: Path, preset: str, error: str) -> None:
        """Record a file that failed before it could be fingerprinted (symlink, FIFO, unreadable)."""
        marker = f"file:{source}:{time.time_ns()}"
        self.enqueue(marker, marker, preset, "-", "-", str(source))
        self.mark_failed(marker, error)

    def mark_queued(self, key: str, error: str | None = None) -> None:
        """Back to the queue: abandoned at shutdown, or waiting to retry (``error`` says why)."""
        self._set(key, "queued", error=error)
