"""sd_notify without libsystemd: one datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)).

With ``Type=notify`` systemd waits for ``READY=1`` before it considers the service
started, shows ``STATUS=`` in ``systemctl status``, and with ``WatchdogSec=``
restarts the service when ``WATCHDOG=1`` pings stop. Without ``$NOTIFY_SOCKET``
(not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends state lines to systemd's notification socket, if there is one."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self.address = address or None
        self._socket: socket.socket | None = None
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        enabled = watchdog_usec and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        #: ping at half the watchdog period, as sd_watchdog_enabled(3) recommends
        self.watchdog_interval = int(watchdog_usec) / 2e6 if enabled else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # MSG_DONTWAIT: a listener that stopped reading must not stall the main loop
            self._socket.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError:
            pass  # systemd gone or socket full: never let notification break the daemon

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog if it is due (call from the main loop as often as you like)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
