"""``photostyle status``: what the daemon is doing, read from its ledger and status file.

Works while the daemon runs (the ledger is SQLite in WAL mode; the status file is
replaced atomically every second) and after it stopped. It needs only the state
folder, so it also works while ``config.yaml`` is broken: exactly when someone
editing it wants to see that the daemon still runs on the old config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.app import default_config_path, load_app
from pipeline.config import resolve_config_path
from pipeline.daemon.state_files import LEDGER_FILE, STATUS_FILE
from pipeline.errors import ConfigError, PhotostyleError
from pipeline.daemon.ledger import Ledger, LedgerError
from pipeline.config.yamlsource import read_yaml

log = logging.getLogger(__name__)


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


def _has_state(folder: Path) -> bool:
    return (folder / STATUS_FILE).is_file() or (folder / LEDGER_FILE).is_file()


def _raw_state(config_path: Path) -> Path:
    """The ``state:`` key of a config that failed validation, read as plain YAML (default ``state``)."""
    try:
        data = read_yaml(config_path).data
    except Exception:  # whatever is wrong with it, the default folder is the best remaining guess
        data = None
    value = data.get("state") if isinstance(data, dict) else None
    return resolve_config_path(Path(value if isinstance(value, str) and value else "state"), config_path.parent)


def state_folder(config_path: Path | None, state: Path | None = None) -> Path:
    """The daemon's state folder: ``--state``, else the config's, else (config invalid) its raw ``state:`` key.

    The fallback is taken only when that folder holds a daemon's status file or
    ledger; otherwise the config's own errors are the answer.
    """
    if state is not None:
        folder = state.expanduser().absolute()
        if not folder.is_dir():
            raise ConfigError([f"{folder}: state folder not found"])
        return folder
    try:
        return load_app(config_path).config.state
    except PhotostyleError as exc:  # ConfigError, PluginError: the config, not the state, is broken
        path = Path(config_path or default_config_path()).expanduser().absolute()
        folder = _raw_state(path) if path.is_file() else None
        if folder is None or not _has_state(folder):
            raise
        problems = len(exc.problems) if isinstance(exc, ConfigError) else 1
        log.warning("%s is invalid (%d problem%s; `photostyle check` lists them); status read from %s",
                    path, problems, "" if problems == 1 else "s", folder)
        return folder


def status_report(state: Path) -> dict[str, Any]:
    """Everything ``photostyle status`` shows, as data (``--json`` prints it as is)."""
    live = _read_status(state)
    running = bool(live) and not live.get("stopped") and _alive(int(live.get("pid", 0)))
    report: dict[str, Any] = {"daemon": "running" if running else "not running", "pid": live.get("pid") if live else None}
    waiting: list[dict[str, Any]] = []
    if live and running:
        report.update({key: live[key] for key in ("queued", "waiting_retry", "settling", "running")})
        report["workers"] = live.get("workers") or []
        waiting = waiting_for_writers(live)
        report["waiting_writer"] = waiting
    report["models"] = (live.get("models") if live and running else None) or trained_models(state)
    ledger_path = state / LEDGER_FILE
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
    return not_failed_yet(report, waiting)


def trained_models(state: Path) -> dict[str, dict[str, Any]]:
    """The models in ``state/models`` from their sidecars, for when no daemon has checked them against the config."""
    from pipeline.engine.fast.model_files import ModelFiles, read_sidecar

    models: dict[str, dict[str, Any]] = {}
    for path in sorted((state / "models").glob("*.json")) if (state / "models").is_dir() else []:
        if path.name.endswith(".checkpoint.json"):
            continue
        sidecar = read_sidecar(ModelFiles.of(state, path.stem))
        if sidecar is not None:
            validation = sidecar.get("curves", {}).get("validation") or [[None, None, None]]
            models[path.stem] = {"model": "trained (checked against the config when the daemon runs)",
                                 "steps": sidecar.get("steps"), "trained_at": sidecar.get("trained_at"),
                                 "validation_loss": validation[-1][2]}
    return models


def render_models(models: dict[str, dict[str, Any]]) -> list[str]:
    """One line per fast preset or trained model: current, stale (and why), or missing."""
    from pipeline.files.textsafe import printable as p

    lines = ["models:"] if models else []
    for name, state in models.items():
        trained = f", {state['steps']} steps, trained {state['trained_at']}" if state.get("steps") else ""
        engine = f" (engine: {state['engine']})" if state.get("engine") else ""
        lines.append(p(f"  {name}{engine}: {state['model']}{trained}"))
    return lines


def waiting_for_writers(live: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """The status file's photos waiting for their writer, with the seconds left counted from ``now``.

    The file is written every second; ``fails_at`` (wall clock) makes the seconds left right when it is read.
    """
    now = time.time() if now is None else now
    waiting = []
    for entry in live.get("waiting_writer") or []:
        try:
            left = max(0.0, float(entry["fails_at"]) - now)
        except (KeyError, TypeError, ValueError):
            left = float(entry.get("seconds_left") or 0.0)
        waiting.append({**entry, "seconds_left": round(left, 1)})
    return waiting


def not_failed_yet(report: dict[str, Any], waiting: list[dict[str, Any]]) -> dict[str, Any]:
    """Count a photo that waits in the inbox for its writer as waiting, not as failed.

    A photo that failed to load stays in the inbox for ``watch.incomplete_grace`` and is failed only if it
    is still unfinished then; the ledger records the failure at once. While it waits, it is taken out of
    ``failed`` and of the last errors (its newest error of that file and preset), and counted in ``waiting``.
    """
    counts = report["counts"]
    pending = [entry for entry in waiting if entry.get("counted_failed")]
    if counts:
        counts["failed"] = max(0, counts.get("failed", 0) - len(pending))
    if waiting:
        counts["waiting"] = len(waiting)
    errors = list(report["last_errors"])
    for entry in pending:
        for error in errors:  # newest first
            if error["file"] == entry["file"] and error["preset"] == entry["preset"]:
                errors.remove(error)
                break
    report["last_errors"] = errors
    return report


def render_workers(workers: list[dict[str, Any]]) -> list[str]:
    """One line per worker: name, node, device, running photo and progress, photos done, last error."""
    from pipeline.files.textsafe import printable

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
        lines.append(printable(line))
    return lines


def render_waiting(waiting: list[dict[str, Any]]) -> list[str]:
    """One line per photo waiting in the inbox for its writer, with the seconds left before it is failed."""
    from pipeline.files.textsafe import printable as p

    if not waiting:
        return []
    lines = [f"waiting for the writer: {len(waiting)} (in the inbox, unfinished; each moves to failed/ if it "
             "is still so when its time is up, and is taken again if it changes)"]
    for entry in waiting:
        lines.append(f"  {p(entry['file'])} [{p(entry['preset'])}]: {entry['seconds_left']:.0f} s left; "
                     f"{p(entry.get('reason') or 'looks unfinished')}")
    return lines


def render(report: dict[str, Any]) -> str:
    """The report as lines for a terminal; names and errors come from the inbox, so each is made printable."""
    from pipeline.files.textsafe import printable as p  # imported here: the rest of this module is edited elsewhere

    lines = [f"daemon: {p(report['daemon'])}" + (f" (pid {p(report['pid'])})" if report["daemon"] == "running" else "")]
    if report["daemon"] == "running":
        lines.append(f"queue: {p(report['queued'])} waiting, {p(report['waiting_retry'])} waiting to retry, "
                     f"{p(report['settling'])} still being written")
        job = report.get("running")
        if job:
            percent = f" ({100 * job['done'] // job['total']}%)" if job["total"] else ""
            lines.append(f"running: {p(job['file'])} [{p(job['preset'])}] {job['done']}/{job['total']}{percent} "
                         f"{p(job['message'])}, {time.time() - job['started']:.0f} s")
        else:
            lines.append("running: nothing")
        lines += render_workers(report.get("workers") or [])
        lines += render_waiting(report.get("waiting_writer") or [])
    lines += render_models(report.get("models") or {})
    if report.get("ledger_error"):
        lines.append(f"ledger: cannot be read: {p(report['ledger_error'])}")
    counts = report["counts"]
    lines.append(f"done: {counts.get('done', 0)}, failed: {counts.get('failed', 0)}, "
                 f"queued: {counts.get('queued', 0)}, running: {counts.get('running', 0)}"
                 + (f", waiting for the writer: {counts['waiting']}" if counts.get("waiting") else ""))
    if report["last_errors"]:
        lines.append("last errors:")
        for error in report["last_errors"]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(error["when"]))
            lines.append(f"  {when} {p(error['file'])} [{p(error['preset'])}]: {p(error['error'])}")
    return "\n".join(lines)


def status(state: Path, as_json: bool) -> str:
    report = status_report(state)
    return json.dumps(report, indent=2) if as_json else render(report)
