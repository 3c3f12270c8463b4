"""The sidecar: ``<output>.json`` beside every result, saying how to make it again.

A result on its own does not say which preset, seed, weights or photostyle
version produced it; the sidecar does, next to the file, so it travels with it
(a synced outbox, a copied folder). It is also what the gallery is built from,
so anything that writes results through :func:`pipeline.job.run_job` (``process``,
the daemon) shows up there without telling the gallery.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.context import JobContext, JobResult
from pipeline.errors import PhotostyleError
from pipeline.fileops import write_text_atomic

SUFFIX = ".json"
FORMAT = 1  # bumped when a key changes meaning; readers skip records newer than they know


class SidecarError(PhotostyleError):
    """An output has no sidecar, or its sidecar cannot be read."""


@cache
def photostyle_version() -> str:
    try:
        return version("photostyle")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def sidecar_path(output: Path) -> Path:
    """``photo.jpg`` -> ``photo.jpg.json`` (the full name, so ``photo.jpg`` and ``photo.png`` never share one)."""
    return output.with_name(output.name + SUFFIX)


def build_record(result: JobResult, ctx: JobContext) -> dict[str, Any]:
    """Everything needed to reproduce ``result``: settings as validated, what plugins reported, timings."""
    return {
        "sidecar_format": FORMAT,
        "photostyle": photostyle_version(),
        "job_id": result.job_id,
        "input": str(Path(result.source).absolute()),
        "output": str(Path(result.output).absolute()),
        "preset": result.preset,
        "settings": ctx.preset.model_dump(mode="json"),
        "report": result.report,  # vgg_style: loss {initial, final}, engine {weights, device, settings (seed), …}
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
        "seconds": round(result.seconds, 3),
        "created": datetime.now(UTC).isoformat(timespec="microseconds"),
    }


def write_sidecar(result: JobResult, ctx: JobContext) -> Path:
    """Write ``<output>.json`` atomically; values a plugin reported that JSON cannot hold become strings."""
    path = sidecar_path(Path(result.output))
    write_text_atomic(path, json.dumps(build_record(result, ctx), indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def load_record(path: Path) -> dict[str, Any]:
    """Parse one sidecar file; raise SidecarError when it is not one photostyle can read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SidecarError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("sidecar_format"), int):
        raise SidecarError(f"{path}: not a photostyle sidecar")
    if record["sidecar_format"] > FORMAT:
        raise SidecarError(f"{path}: written by a newer photostyle ({record.get('photostyle')})")
    return record


def read_sidecar(output: Path) -> dict[str, Any]:
    """The record of a result (``output`` may also name the sidecar itself); SidecarError if it has none."""
    path = output if output.name.endswith(SUFFIX) and output.is_file() else sidecar_path(output)
    if not path.is_file():
        raise SidecarError(f"{output}: no sidecar ({path.name} not found); only results photostyle wrote have one")
    return load_record(path)


def record_original(output: Path, original: Path | None, policy: str) -> None:
    """Say in the sidecar where the original went after the job (``watch.after``), so its paths stay true."""
    path = sidecar_path(output)
    record = load_record(path)
    record["original"] = {"after": policy, "path": str(original.absolute()) if original is not None else None}
    write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
