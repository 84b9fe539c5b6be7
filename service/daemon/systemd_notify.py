"""What the daemon tells systemd (sd_notify(3)): ready, a status line, alive, stopping.

Under `Type=notify` systemd counts the daemon started only on READY=1, so `systemctl start irisflow`
returns once the job store, the lock and /metrics are up, and a daemon that dies on the way fails the
start. `systemctl status irisflow` shows the last STATUS= line. With `WatchdogSec=` systemd restarts a
daemon whose WATCHDOG=1 pings stop. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

import datetime as dt
import os

import sdnotify


class Notifier:
    """The daemon's messages to systemd, through the notification socket systemd named, if any."""

    def __init__(self):
        self._socket = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        self.watchdog_interval = watchdog_interval(os.environ, os.getpid())

    def _send(self, *assignments):
        if self._socket is not None:
            self._socket.notify("\n".join(assignments))

    def ready(self, status):
        self._send("READY=1", f"STATUS={status}")

    def status(self, status):
        self._send(f"STATUS={status}")

    def alive(self):
        self._send("WATCHDOG=1")

    def stopping(self, status):
        self._send("STOPPING=1", f"STATUS={status}")


def watchdog_interval(environ, pid):
    """How often to ping: half the watchdog timeout systemd set in WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; None without a watchdog, or when WATCHDOG_PID names another process (the daemon's parent)."""
    owner = environ.get("WATCHDOG_PID")
    try:
        timeout = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if timeout <= 0 or (owner and owner != str(pid)):
        return None
    return dt.timedelta(microseconds=timeout) / 2
