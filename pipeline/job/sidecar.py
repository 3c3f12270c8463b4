"""The sidecar: ``<output>.json`` beside every result, saying how to make it again.

A result on its own does not say which preset, seed, weights or photostyle
version produced it; the sidecar does, next to the file, so it travels with it
(a synced outbox, a copied folder). It is also what the gallery is built from,
so anything that writes results through :func:`pipeline.job.runner.run_job` (``process``,
the daemon) shows up there without telling the gallery.

Paths are stored losslessly. A file name is bytes and need not be UTF-8 (an old
NAS, an SMB share); JSON holds only Unicode. So ``input`` and ``output`` are
readable text (undecodable bytes shown as U+FFFD), and only when a path is not
valid UTF-8, ``input_b64`` / ``output_b64`` hold its exact bytes in base64.
Readers use :func:`record_path`, which prefers the exact bytes; sidecars written
before these keys existed read as before.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.job.context import JobContext, JobResult
from pipeline.errors import PhotostyleError
from pipeline.files.fileops import fit_name, name_max, read_regular_file, write_text_atomic
from pipeline.files.textsafe import is_utf8, printable, readable

SUFFIX = ".json"
FORMAT = 1  # bumped when a key changes meaning; readers skip records newer than they know
MAX_BYTES = 4 * 1024 * 1024  # a real sidecar is a few KB; anything far larger is not one


class SidecarError(PhotostyleError):
    """An output has no sidecar, or its sidecar cannot be read (the message is made printable: it names files)."""

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


@cache
def photostyle_version() -> str:
    try:
        return version("photostyle")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def sidecar_path(output: Path) -> Path:
    """``photo.jpg`` -> ``photo.jpg.json`` (the full name, so ``photo.jpg`` and ``photo.png`` never share one).

    Results photostyle writes leave room for the suffix; a longer name (a file put
    in the outbox by hand) gets a shortened one from :func:`~pipeline.files.fileops.fit_name`.
    """
    output = Path(output)
    return output.with_name(fit_name(output.name, SUFFIX, limit=name_max(output.parent)))


def path_fields(key: str, path: Path | str) -> dict[str, str]:
    """``{key: readable text}``, plus ``{key}_b64`` with the exact bytes when the path is not UTF-8."""
    text = str(path)
    fields = {key: readable(text)}
    if not is_utf8(text):
        fields[f"{key}_b64"] = base64.b64encode(os.fsencode(text)).decode("ascii")
    return fields


def record_path(record: dict[str, Any], key: str) -> Path | None:
    """The path stored under ``key`` exactly as it is on disk (from ``{key}_b64`` when there is one)."""
    encoded = record.get(f"{key}_b64")
    if isinstance(encoded, str):
        try:
            return Path(os.fsdecode(base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError):
            pass  # a damaged copy: fall back to the readable text
    value = record.get(key)
    return Path(value) if isinstance(value, str) and value else None


def build_record(result: JobResult, ctx: JobContext) -> dict[str, Any]:
    """Everything needed to reproduce ``result``: settings as validated, what plugins reported, timings."""
    return {
        "sidecar_format": FORMAT,
        "photostyle": photostyle_version(),
        "job_id": result.job_id,
        **path_fields("input", Path(result.source).absolute()),
        **path_fields("output", Path(result.output).absolute()),
        "preset": result.preset,
        "settings": ctx.preset.model_dump(mode="json"),
        "report": result.report,  # vgg_style: loss {initial, final}, engine {weights, device, settings (seed), …}
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
        "seconds": round(result.seconds, 3),
        "created": datetime.now(UTC).isoformat(timespec="microseconds"),
    }


def to_json(record: dict[str, Any]) -> str:
    """The record as UTF-8-safe JSON text; values JSON cannot hold become strings.

    Readable non-ASCII stays as is. Should a plugin report a string holding a
    name's undecodable bytes (lone surrogates, which UTF-8 cannot encode), the
    whole record is written with ``\\uXXXX`` escapes instead: still valid JSON
    that reads back to the same strings.
    """
    text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, indent=2, ensure_ascii=True, default=str)
    return text + "\n"


def write_sidecar(result: JobResult, ctx: JobContext) -> Path:
    """Write ``<output>.json`` atomically."""
    path = sidecar_path(Path(result.output))
    write_text_atomic(path, to_json(build_record(result, ctx)))
    return path


def load_record(path: Path, *, follow_links: bool = True) -> dict[str, Any]:
    """Parse one sidecar file; raise SidecarError when it is not one photostyle can read.

    Never blocks (a FIFO is refused) and never reads more than :data:`MAX_BYTES`;
    with ``follow_links=False`` (the gallery, scanning an outbox others can write)
    a symlink is refused too.
    """
    try:
        record = json.loads(read_regular_file(path, MAX_BYTES, follow_links=follow_links).decode("utf-8"))
    except FileNotFoundError:
        raise SidecarError(f"{path}: not found") from None
    except OSError as exc:
        raise SidecarError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
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


def record_original(output: Path, original: Path | None, policy: str, note: str | None = None) -> None:
    """Say in the sidecar where the original went after the job (``watch.after``), so its paths stay true.

    ``note`` explains an original that was not handled as ``policy`` says (replaced by a newer version).
    """
    path = sidecar_path(output)
    record = load_record(path)
    where = path_fields("path", original.absolute()) if original is not None else {"path": None}
    record["original"] = {"after": policy, **where, **({"note": note} if note else {})}
    write_text_atomic(path, to_json(record))
