"""A systemd unit for ``photostyle watch``: notify-type, watchdog, restart, sandboxed.

Hardening follows systemd.exec(5): ``ProtectSystem=strict`` makes the whole file
system read-only, so every folder photostyle writes (inbox, outbox, processed,
failed, state, the weights cache) is listed in ``ReadWritePaths=``.
``ProtectHome`` is ``yes`` only when nothing photostyle needs lives under a home
folder, else ``read-only`` (listed paths stay writable). ``PrivateDevices`` is
deliberately absent: it would hide the GPU.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.fileops import write_text_atomic

UNIT_NAME = "photostyle.service"
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True)
class UnitPlan:
    """Where the unit goes, the folders it needs, and what to run afterwards."""

    path: Path
    text: str
    commands: list[str]
    folders: list[Path]


def _under_home(path: Path) -> bool:
    return any(root == path or root in path.parents for root in HOME_ROOTS)


def writable_folders(config: Any) -> list[Path]:
    """Every folder the daemon writes: these must exist and be listed in ReadWritePaths=."""
    return [config.inbox, config.outbox, config.processed, config.failed, config.state, Path(torch.hub.get_dir())]


def render_unit(config: Any, config_path: Path, *, user: bool, watchdog_seconds: int = 120) -> str:
    """The unit file's text for this config, Python and venv."""
    python = Path(sys.executable).absolute()  # not resolved: a venv's python must stay the venv's
    writable = writable_folders(config)
    needed = writable + [python, config_path, Path(__file__).resolve().parent.parent]
    protect_home = "read-only" if any(_under_home(p) for p in needed) else "yes"
    exec_start = shlex.join([str(python), "-m", "pipeline", "watch", "-c", str(config_path)])
    lines = [
        "[Unit]",
        "Description=photostyle: turns photos dropped into a folder into artwork",
        "Documentation=file://" + str(Path(__file__).resolve().parent.parent / "README.md"),
        "After=network-online.target local-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={config_path.parent}",
        "Environment=PYTHONUNBUFFERED=1",
        f"Environment=TORCH_HOME={Path(torch.hub.get_dir()).parent}",
        "Restart=on-failure",
        "RestartSec=10",
        f"WatchdogSec={watchdog_seconds}",
        f"TimeoutStopSec={int(config.watch.shutdown_timeout) + 30}",
        # The first start may load (or download) 548 MB of weights before READY=1.
        "TimeoutStartSec=600",
    ]
    if not user:
        account = os.environ.get("SUDO_USER") or getpass.getuser()
        lines.append(f"User={account}")
    lines += [
        "# Hardening (systemd.exec(5)). The GPU stays visible: no PrivateDevices=.",
        "# For NVIDIA with DevicePolicy=closed, allow: /dev/nvidiactl, /dev/nvidia0, /dev/nvidia-uvm (rw).",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
        # "-": a missing path does not stop the unit (install creates them all beforehand).
        "ReadWritePaths=" + " ".join("-" + shlex.quote(str(p)) for p in dict.fromkeys(writable)),
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def plan_install(config: Any, config_path: Path, *, user: bool) -> UnitPlan:
    """The unit's path, text and the commands that enable it."""
    if user:
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
        ctl = "systemctl --user"
        commands = [f"{ctl} daemon-reload", f"{ctl} enable --now {UNIT_NAME}",
                    f"loginctl enable-linger {getpass.getuser()}   # keep it running after you log out",
                    f"journalctl --user -u {UNIT_NAME} -f   # follow its log"]
    else:
        folder = Path("/etc/systemd/system")
        commands = ["sudo systemctl daemon-reload", f"sudo systemctl enable --now {UNIT_NAME}",
                    f"journalctl -u {UNIT_NAME} -f   # follow its log"]
    commands.append(f"{sys.executable} -m pipeline status -c {config_path}   # queue and progress")
    text = render_unit(config, config_path, user=user)
    return UnitPlan(folder / UNIT_NAME, text, commands, writable_folders(config))


def install(plan: UnitPlan) -> None:
    """Create the folders the sandbox must find, then write the unit file (atomically)."""
    for folder in plan.folders:
        folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan.path, plan.text)
