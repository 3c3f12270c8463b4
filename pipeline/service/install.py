"""A systemd unit for ``photostyle watch``: notify-type, watchdog, restart, sandboxed.

Hardening follows systemd.exec(5): ``ProtectSystem=strict`` makes the whole file
system read-only, so every folder photostyle writes (inbox, outbox, processed,
failed, state, the weights cache) is listed in ``ReadWritePaths=``.
``ProtectHome`` is ``yes`` only when nothing photostyle needs lives under a home
folder, else ``read-only`` (listed paths stay writable). ``PrivateDevices`` is
deliberately absent: it would hide the GPU. Every value goes through
:mod:`pipeline.service.unit_syntax`, so any path (spaces, ``%``, quotes) reads back intact.

A system-wide unit written under ``sudo`` runs as the person who called sudo
(``User=$SUDO_USER``), so it must use *their* weights cache, not root's: see
:func:`service_account`.

A unit that cannot work is refused (:class:`UnitRefused`, exit status 2) unless forced:
a folder the sandbox hides (``PrivateTmp=yes`` hides ``/tmp`` and ``/var/tmp``,
``ProtectHome=yes`` the home folders), or a torch cache (``TORCH_HOME``) or weights
file the service's account cannot read. Those are :attr:`UnitPlan.problems`; what
only may go wrong (weights to download at the first start) are its ``warnings``.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shlex
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pipeline.errors import PhotostyleError
from pipeline.files.fileops import write_text_atomic
from pipeline.service.unit_syntax import single_path, specifiers, word
from pipeline.engine.weights_names import TORCHVISION_FILE

UNIT_NAME = "photostyle.service"
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))
#: Characters systemd refuses in ``ExecStart=``'s executable ("contains special characters"), however quoted.
UNSAFE_EXECUTABLE = "\"'\\"
#: How to start an executable whose path systemd refuses: a constant ``sh -c`` script that ``exec``s its ``$0``
#: with its arguments. The path is only ever an argument, never shell text, so no character in it (``'``, ``=``,
#: ``$``, a space) means anything to the shell, and ``exec`` keeps the PID systemd watches (``Type=notify``).
#: Not ``/usr/bin/env``: it reads any argument containing ``=`` as an assignment (``/tmp/a=b'c/python``).
TRAMPOLINE = ["/bin/sh", "-c", 'exec "$0" "$@"']
#: Hidden from the service by ``PrivateTmp=yes`` (it gets fresh, empty ones).
PRIVATE_TMP_ROOTS = (Path("/tmp"), Path("/var/tmp"))


def session_torch_home() -> Path:
    """The folder torch caches weights under in this session, worked out as ``torch.hub`` does.

    ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's
    ``_get_torch_home``), so that ``service install`` does not import torch (3 s).
    """
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache, "torch").expanduser()


@dataclass(frozen=True)
class ServiceAccount:
    """Who the service runs as, and which torch cache (``TORCH_HOME``) it uses, with why."""

    name: str
    uid: int
    gid: int
    home: Path
    torch_home: Path
    torch_home_reason: str


class UnitRefused(PhotostyleError):
    """``service install`` would write a unit that cannot work; ``--force`` writes it anyway."""

    exit_code = 2


@dataclass(frozen=True)
class UnitPlan:
    """Where the unit goes, the folders it needs, what to run afterwards, and what to tell the user.

    ``problems`` say why the unit cannot work, each with its fix (install refuses it unless forced);
    ``warnings`` are what may still go wrong.
    """

    path: Path
    text: str
    commands: list[str]
    folders: list[Path]
    account: ServiceAccount
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _inside(path: Path, root: Path) -> bool:
    return root == path or root in path.parents


def _both(path: Path) -> list[Path]:
    """The path as written and as resolved: a symlink into /tmp or /home is hidden all the same."""
    path = path.absolute()
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return [path]
    return [path] if resolved == path else [path, resolved]


def _under_home(path: Path) -> bool:
    return any(_inside(p, root) for p in _both(path) for root in HOME_ROOTS)


def service_account(*, user: bool) -> ServiceAccount:
    """The account the unit runs as and its torch cache.

    A user unit, or a system unit written by root itself, runs as the current
    account with this session's cache. A system unit written under sudo runs as
    ``$SUDO_USER``; sudo replaced their environment with root's, so their cache is
    ``<their home from pwd>/.cache/torch`` (torch's default), unless ``$TORCH_HOME``
    is set and lies inside their home, which means sudo kept their own value.
    (Their ``$XDG_CACHE_HOME`` cannot be known from here.)
    """
    sudo_user = os.environ.get("SUDO_USER")
    if user or os.geteuid() != 0 or not sudo_user or sudo_user == "root":
        entry = pwd.getpwuid(os.geteuid())
        return ServiceAccount(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir),
                              session_torch_home(), "this session's torch cache")
    entry = pwd.getpwnam(sudo_user)
    home = Path(entry.pw_dir)
    kept = os.environ.get("TORCH_HOME")
    if kept and _inside(Path(kept).expanduser().absolute(), home):
        torch_home, reason = Path(kept).expanduser().absolute(), f"$TORCH_HOME, kept by sudo, inside {sudo_user}'s home"
    else:
        torch_home = home / ".cache" / "torch"
        reason = (f"torch's default cache of {sudo_user}, who ran sudo and whom the service runs as"
                  + (f"; root's $TORCH_HOME ({kept}) is not used" if kept else ""))
    return ServiceAccount(sudo_user, entry.pw_uid, entry.pw_gid, home, torch_home, reason)


def writable_folders(config: Any, torch_home: Path) -> list[Path]:
    """Every folder the daemon writes: these must exist and be listed in ReadWritePaths=."""
    return [config.inbox, config.outbox, config.processed, config.failed, config.state, torch_home / "hub"]


def read_paths(config: Any, config_path: Path) -> list[Path]:
    """What the daemon reads besides the folders it writes: it must see these too."""
    paths = [Path(sys.executable).absolute(), config_path, Path(__file__).resolve().parent.parent, config.styles]
    paths += [ref.image for preset in config.presets.values() for ref in preset.style_images]
    paths += list(config.plugins.paths)
    if config.model.weights not in ("torchvision", "random"):
        paths.append(Path(config.model.weights))
    return paths


def sandbox_warnings(paths: list[Path], protect_home: str, project: Path | None = None) -> list[str]:
    """Paths the unit's sandbox would hide from the daemon (PrivateTmp=yes, ProtectHome=), one line per cause.

    Paths inside ``project`` (the config's folder) are named once, as the project.
    """
    hidden: dict[str, list[Path]] = {}
    for path in dict.fromkeys(paths):
        if project is not None and _inside(path.absolute(), project):
            path = project
        if any(_inside(p, root) for p in _both(path) for root in PRIVATE_TMP_ROOTS):
            cause = "is under /tmp or /var/tmp, which the unit's PrivateTmp=yes hides from the service"
        elif protect_home in ("yes", "tmpfs") and _under_home(path):
            cause = f"is under a home folder, which the unit's ProtectHome={protect_home} hides from the service"
        else:
            continue
        if path not in hidden.setdefault(cause, []):
            hidden[cause].append(path)
    return [f"{', '.join(map(str, found))} {cause}: move {'it' if len(found) == 1 else 'them'} elsewhere "
            "(e.g. /srv or your home folder)" for cause, found in hidden.items()]


def protect_home_value(needed: list[Path]) -> str:
    """``yes`` hides every home folder; ``read-only`` when the daemon needs anything under one."""
    return "read-only" if any(_under_home(p) for p in needed) else "yes"


def render_unit(config: Any, config_path: Path, *, user: bool, account: ServiceAccount | None = None,
                python: Path | None = None, watchdog_seconds: int = 120) -> str:
    """The unit file's text for this config, Python and venv; every value escaped for systemd."""
    account = account or service_account(user=user)
    python = python or Path(sys.executable).absolute()  # not resolved: a venv's python must stay the venv's
    writable = writable_folders(config, account.torch_home)
    protect_home = protect_home_value(writable + read_paths(config, config_path))
    argv = [str(python), "-m", "pipeline", "watch", "-c", str(config_path)]
    if any(char in argv[0] for char in UNSAFE_EXECUTABLE):
        argv[:0] = TRAMPOLINE  # systemd refuses such an executable path, but not such an argument
    exec_start = " ".join([word(argv[0], "the Python executable")]
                          + [word(arg, "a path", variables=True) for arg in argv[1:]])
    readme = Path(__file__).resolve().parent.parent / "README.md"
    lines = [
        "[Unit]",
        "Description=photostyle: turns photos dropped into a folder into artwork",
        "Documentation=" + specifiers(readme.as_uri()),
        "After=network-online.target local-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WorkingDirectory=" + single_path(str(config_path.parent), "the config's folder"),
        "Environment=PYTHONUNBUFFERED=1",
        "Environment=" + word(f"TORCH_HOME={account.torch_home}", "the torch cache"),
        "Restart=on-failure",
        "RestartSec=10",
        f"WatchdogSec={watchdog_seconds}",
        f"TimeoutStopSec={int(config.watch.shutdown_timeout) + 30}",
        # The first start may load (or download) 548 MB of weights before READY=1.
        "TimeoutStartSec=600",
    ]
    if not user:
        lines.append("User=" + word(account.name, "the user name"))
    lines += [
        "# Hardening (systemd.exec(5)). The GPU stays visible: no PrivateDevices=.",
        "# For NVIDIA with DevicePolicy=closed, allow: /dev/nvidiactl, /dev/nvidia0, /dev/nvidia-uvm (rw).",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
        # "-": a missing path does not stop the unit (install creates them all beforehand).
        "ReadWritePaths=" + " ".join(word("-" + str(p), "a folder") for p in dict.fromkeys(writable)),
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


def _groups(account: ServiceAccount) -> set[int]:
    try:
        return {account.gid, *os.getgrouplist(account.name, account.gid)}
    except (KeyError, OSError):  # an account pwd does not know: its primary group only
        return {account.gid}


def _lacking(path: Path, account: ServiceAccount, wanted: str) -> str:
    """The permissions of ``wanted`` (``r``, ``w``, ``x``) ``account`` lacks on ``path``, as a chmod
    argument (``o+x``); empty when it has them all. From the mode bits: root lacks nothing."""
    if account.uid == 0:
        return ""
    info = path.stat()
    who, shift = ("u", 6) if info.st_uid == account.uid else ("g", 3) if info.st_gid in _groups(account) else ("o", 0)
    missing = "".join(p for p, bit in zip("rwx", (4, 2, 1)) if p in wanted and not (info.st_mode >> shift) & bit)
    return f"{who}+{missing}" if missing else ""


def _blocked(path: Path, account: ServiceAccount, wanted: str) -> tuple[Path, str] | None:
    """The first folder on the way to ``path`` that ``account`` cannot pass (``x``), else ``path`` itself if
    it lacks ``wanted`` there: (where, the chmod argument that fixes it); None when nothing is in the way."""
    path = path.resolve()
    for folder in [*reversed(path.parents), path]:
        lacking = _lacking(folder, account, wanted if folder == path else "x")
        if lacking:
            return folder, lacking
    return None


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cannot(account: ServiceAccount, what: str, found: tuple[Path, str], cache: Path | None = None) -> str:
    """One line: who cannot do what, which folder or file is in the way, and how to fix it.

    A folder of the torch ``cache`` (or the file in question) is opened up (``chmod``) or handed to the
    account (``chown``, to write); for a folder above the cache, another cache is the better fix.
    """
    where, lacking = found
    quoted = shlex.quote(str(where))
    own = cache is None or _inside(where, cache.resolve())
    if "w" in lacking and not own:
        fix = f"set TORCH_HOME to a folder {account.name} can write (e.g. ~/.cache/torch) and install again"
    else:
        fix = "run " + (f"`sudo chown {shlex.quote(account.name)} {quoted}`" if "w" in lacking and "u" not in lacking
                        else f"`chmod {lacking} {quoted}`")
        if not own:
            fix += ", or set TORCH_HOME to a folder it can read and install again"
    mode = stat.filemode(where.stat().st_mode)
    owner = _owner(where)
    return f"{account.name}, whom the service runs as, cannot {what} ({where} is {mode}, owned by {owner}): {fix}"


def _weights_checks(config: Any, account: ServiceAccount) -> tuple[list[str], list[str]]:
    """(problems, warnings): whether the service's account can read the weights, or download them."""
    weights = config.model.weights
    if weights == "random":
        return [], []
    if weights != "torchvision":
        source = Path(weights)
        found = source.exists() and _blocked(source, account, "r")
        return ([_cannot(account, f"read model.weights {source}", found)] if found else []), []
    cached = account.torch_home / "hub" / "checkpoints" / TORCHVISION_FILE
    if cached.is_file():
        found = _blocked(cached, account, "r")
        what = f"read the VGG19 weights in its torch cache, {cached}"
        return ([_cannot(account, what, found, account.torch_home)] if found else []), []
    # Not cached: the service downloads them into hub/checkpoints/. install creates what is missing of hub/
    # (for the account when root installs), so the account passes every folder down to the deepest one there
    # is, and writes it when it is hub/ or below, or when it must create hub/ itself (it installs as itself).
    hub = account.torch_home / "hub"
    deepest = next(folder for folder in [hub / "checkpoints", *(hub / "checkpoints").parents] if folder.exists())
    creates = _inside(deepest.absolute(), hub.absolute()) or account.uid == os.geteuid()
    found = _blocked(deepest, account, "wx" if creates else "x")
    if found:
        what = f"download the VGG19 weights into its torch cache, TORCH_HOME={account.torch_home}"
        return [_cannot(account, what, found, account.torch_home)], []
    return [], [f"no VGG19 weights in {cached}: the service downloads them (548 MB) at its first start; offline, "
                f"run `photostyle weights import FILE` as {account.name} first"
                + (" (without sudo)" if account.uid != os.geteuid() else "")]


def plan_install(config: Any, config_path: Path, *, user: bool) -> UnitPlan:
    """The unit's path, text, the commands that enable it, and what the user should know."""
    account = service_account(user=user)
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
    commands.append(f"{shlex.quote(sys.executable)} -m pipeline status -c {shlex.quote(str(config_path))}"
                    "   # queue and progress")
    text = render_unit(config, config_path, user=user, account=account)
    writable = writable_folders(config, account.torch_home)
    needed = writable + read_paths(config, config_path)
    notes = [f"runs as {account.name}; TORCH_HOME={account.torch_home} ({account.torch_home_reason})"]
    problems, warnings = _weights_checks(config, account)
    problems[:0] = sandbox_warnings(needed, protect_home_value(needed), config_path.parent)
    return UnitPlan(folder / UNIT_NAME, text, commands, writable, account, notes, warnings, problems)


def _make_folder(folder: Path, account: ServiceAccount) -> None:
    """mkdir -p, handing every folder it creates to the service's account (root creates them under sudo)."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    if account.uid != os.geteuid():
        for created in missing:
            os.chown(created, account.uid, account.gid)


def install(plan: UnitPlan) -> None:
    """Create the folders the sandbox must find, then write the unit file (atomically)."""
    for folder in plan.folders:
        _make_folder(folder, plan.account)
    write_text_atomic(plan.path, plan.text)
