"""The names of the files the daemon keeps in its state folder, for every command that reads them.

``photostyle status`` reads these while a daemon runs; it needs the names, not
the daemon, so they live here rather than in :mod:`pipeline.daemon.loop`.
"""

LEDGER_FILE = "ledger.sqlite3"  # SQLite, WAL mode: readable while the daemon writes
STATUS_FILE = "status.json"  # rewritten atomically about once a second while the daemon runs
