"""Is the inbox inside a two-way synced folder? Then moving an original out of it deletes it everywhere.

A two-way sync client (Syncthing's default send-receive folder, Dropbox, the
Nextcloud and ownCloud desktop clients) turns "moved out of the synced folder"
into "deleted" on every other device. With ``watch.after: move`` and
``processed/`` outside the synced folder, photostyle would remove the user's
originals from their phone and laptop as it works. These clients leave a marker
in the synced folder's root, so photostyle looks for one from the inbox upwards
and refuses a layout that would do that (unison, rsync and rclone jobs leave no
marker: README, "Using a sync client").
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from pipeline.errors import ConfigError

MARKERS: tuple[tuple[str, str], ...] = (  # (glob in the synced root, client)
    (".stfolder", "Syncthing"),
    (".dropbox", "Dropbox"),
    (".dropbox.cache", "Dropbox"),
    (".sync_*.db", "Nextcloud/ownCloud"),
    ("._sync_*.db", "Nextcloud/ownCloud"),
    (".nextcloudsync.log", "Nextcloud"),
    (".owncloudsync.log", "ownCloud"),
)


@dataclass(frozen=True)
class SyncedRoot:
    """A folder a two-way sync client keeps in step with other devices."""

    client: str
    root: Path
    marker: str


def synced_root(folder: Path) -> SyncedRoot | None:
    """The nearest folder at or above ``folder`` that holds a two-way sync client's marker."""
    for candidate in (folder, *folder.parents):
        try:
            names = os.listdir(candidate)
        except OSError:
            continue
        hidden = [name for name in names if name.startswith(".")]
        for pattern, client in MARKERS:
            for name in hidden:
                if fnmatch.fnmatchcase(name, pattern):
                    return SyncedRoot(client, candidate, name)
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def unsafe_after(config: Any) -> str | None:
    """Why ``watch.after`` would delete originals on other devices with this layout, or None when it is safe."""
    policy = config.watch.after
    if policy == "keep":
        return None
    found = synced_root(config.inbox)
    if found is None:
        return None
    where = f"the inbox is inside a {found.client} folder ({found.root}, marked by {found.marker})"
    if policy == "delete":
        return (f"watch.after: delete: {where}, so deleting a done photo deletes it on every device that syncs "
                f"it; set watch.after: keep (done photos are then recognised and skipped)")
    if _inside(config.processed, found.root):
        return None  # a move inside the synced folder is a move on every device
    return (f"watch.after: move: {where} but processed/ ({config.processed}) is outside it, so moving a done "
            f"photo there deletes it on every device that syncs it; put processed/ inside {found.root} "
            f"or set watch.after: keep")


def failed_outside(config: Any) -> str | None:
    """A warning when failed photos would leave a synced inbox (deleted on the other devices, kept here)."""
    found = synced_root(config.inbox)
    if found is None or _inside(config.failed, found.root):
        return None
    return (f"the inbox is inside a {found.client} folder ({found.root}) but failed/ ({config.failed}) is "
            f"outside it: a photo that fails moves to failed/ here and disappears from the other devices")


def refuse_unsafe_after(app: Any) -> None:
    """Raise ConfigError when moving or deleting originals would delete them on a sync client's other devices."""
    problem = unsafe_after(app.config)
    if problem is not None:
        raise ConfigError([f"{app.config_path}: {problem}"])
