"""``photostyle status``: what the daemon is doing, read from its ledger and status file.

Works while the daemon runs (the ledger is SQLite in WAL mode; the status file is
replaced atomically every second) and after it stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.daemon import LEDGER_FILE, STATUS_FILE
from pipeline.ledger import Ledger, LedgerError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_status(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def status_report(config: Any) -> dict[str, Any]:
    """Everything ``photostyle status`` shows, as data (``--json`` prints it as is)."""
    live = _read_status(config.state)
    running = bool(live) and not live.get("stopped") and _alive(int(live.get("pid", 0)))
    report: dict[str, Any] = {"daemon": "running" if running else "not running", "pid": live.get("pid") if live else None}
    if live and running:
        report.update({key: live[key] for key in ("queued", "waiting_retry", "settling", "running")})
        report["workers"] = live.get("workers") or []
    ledger_path = config.state / LEDGER_FILE
    report["counts"], report["last_errors"] = {}, []
    if ledger_path.exists():
        try:
            ledger = Ledger(ledger_path, create=False)
            try:
                report["counts"] = ledger.counts()
                report["last_errors"] = [
                    {"file": record.source, "preset": record.preset, "error": record.error, "when": record.updated}
                    for record in ledger.recent("failed")
                ]
            finally:
                ledger.close()
        except LedgerError as exc:  # corrupt or unreadable: say so in one line, show the rest
            report["ledger_error"] = " ".join(str(exc).split())
    else:
        report["counts"], report["last_errors"] = {}, []
    return report


def render_workers(workers: list[dict[str, Any]]) -> list[str]:
    """One line per worker: name, node, device, running photo and progress, photos done, last error."""
    lines = ["workers:"] if workers else []
    for worker in workers:
        job = worker.get("running")
        doing = "idle"
        if job:
            progress = f" {job['done']}/{job['total']}" if job.get("total") else ""
            doing = f"running {Path(str(job['file'])).name}{progress}"
        line = (f"  {worker['name']} on {worker['node']} [{worker['device']}]: {doing}, "
                f"{worker.get('done', 0)} done, {worker.get('failed', 0)} failed")
        if worker.get("last_error"):
            line += f"; last error: {' '.join(str(worker['last_error']).split())}"
        lines.append(line)
    return lines


def render(report: dict[str, Any]) -> str:
    lines = [f"daemon: {report['daemon']}" + (f" (pid {report['pid']})" if report["daemon"] == "running" else "")]
    if report["daemon"] == "running":
        lines.append(f"queue: {report['queued']} waiting, {report['waiting_retry']} waiting to retry, "
                     f"{report['settling']} still being written")
        job = report.get("running")
        if job:
            percent = f" ({100 * job['done'] // job['total']}%)" if job["total"] else ""
            lines.append(f"running: {job['file']} [{job['preset']}] {job['done']}/{job['total']}{percent} "
                         f"{job['message']}, {time.time() - job['started']:.0f} s")
        else:
            lines.append("running: nothing")
        lines += render_workers(report.get("workers") or [])
    counts = report["counts"]
    lines.append(f"done: {counts.get('done', 0)}, failed: {counts.get('failed', 0)}, "
                 f"queued: {counts.get('queued', 0)}, running: {counts.get('running', 0)}")
    if report["last_errors"]:
        lines.append("last errors:")
        for error in report["last_errors"]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(error["when"]))
            lines.append(f"  {when} {error['file']} [{error['preset']}]: {error['error']}")
    return "\n".join(lines)


def status(config: Any, as_json: bool) -> str:
    report = status_report(config)
    return json.dumps(report, indent=2) if as_json else render(report)
