"""``photostyle show OUTPUT``: how a result was made, from its sidecar.

A sidecar sits in a synced outbox others can write, and names the photo it came
from: every value is printed through :func:`~pipeline.files.textsafe.printable` (or, with
``--json``, :func:`~pipeline.files.textsafe.safe_json`), so no name or setting can put
escape codes on the terminal or break a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.job.sidecar import read_sidecar, record_path
from pipeline.files.textsafe import printable, safe_json


def _number(value: Any) -> str:
    """A setting or figure as a person writes it: 1e+06, true, conv1_1, conv2_1, unset."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_number(item) for item in value) or "[]"
    return "unset" if value is None else str(value)


def _when(created: Any) -> str:
    try:
        return datetime.fromisoformat(str(created)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(created)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"output": {"format": "jpeg"}}`` -> ``("output.format", "jpeg")``; lists of mappings keep their index."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


def _loss_line(loss: dict[str, Any]) -> str:
    initial, final = loss.get("initial") or {}, loss.get("final") or {}
    terms = [
        f"{term} {_number(initial.get(term, '?'))} -> {_number(final.get(term, '?'))}"
        for term in ("content", "style", "tv", "total")
        if term in initial or term in final
    ]
    return ", ".join(terms)


def summary(record: dict[str, Any]) -> str:
    """A few aligned lines a person reads; ``--json`` gives the whole record."""
    report = record.get("report") or {}
    rows: list[tuple[str, str]] = [
        ("output", str(record_path(record, "output"))),  # the exact name: undecodable bytes show as \xNN
        ("input", str(record_path(record, "input"))),
        ("preset", str(record.get("preset"))),
        ("made", f"{_when(record.get('created'))} by photostyle {record.get('photostyle')}"),
        ("job", str(record.get("job_id"))),
    ]
    timings = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in (record.get("timings") or {}).items())
    rows.append(("time", f"{record.get('seconds')} s" + (f" ({timings})" if timings else "")))
    engine = report.get("engine")
    if isinstance(engine, dict):
        size = "x".join(map(str, engine.get("working_size") or [])) or "?"
        rows.append((
            "engine",
            f"{engine.get('name')} on {engine.get('device')}, {engine.get('evaluations')} evaluations at {size} px, "
            f"weights {engine.get('weights')}, {engine.get('pooling')} pooling",
        ))
        seed = (engine.get("settings") or {}).get("seed")
        if seed is not None:
            rows.append(("seed", str(seed)))
    if isinstance(report.get("loss"), dict):
        rows.append(("loss", _loss_line(report["loss"])))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {printable(value)}" for label, value in rows]
    lines.append("settings")
    lines += [f"  {printable(key)}: {printable(_number(value))}" for key, value in _flatten(record.get("settings") or {})]
    return "\n".join(lines)


def show(output: Path, as_json: bool) -> str:
    """The sidecar of ``output``, summarised or raw; SidecarError (one line, exit 1) when it has none."""
    record = read_sidecar(output)
    return safe_json(record, indent=2) if as_json else summary(record)
