"""systemd's service notifications (sd_notify(3)), without libsystemd: one datagram per
message to the socket named by $NOTIFY_SOCKET.

The unit is `Type=notify`: systemd counts the agent started when it says READY=1, that
is once the pipeline runs, not when the process exists. With `WatchdogSec=`, the agent
pings WATCHDOG=1 only while it is healthy — while the sealer keeps completing rounds —
so an agent that hangs (a TPM that never answers, a wedged event loop) is killed and
restarted by systemd; being up is not enough. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace, written with a leading NUL
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(environ)

    def send(self, *fields: str) -> None:
        """Sends "FIELD=value" lines; a lost notification is logged, never raised: it must
        not stop the agent (systemd then notices on its own, by timeout)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", self._address.lstrip("\0"), exc)

    async def keep_alive(self, healthy: Callable[[], bool]) -> None:
        """Pings the watchdog at half its interval while `healthy()`; stops pinging, and
        says why in the unit's status, when it is not."""
        assert self.watchdog_interval is not None
        ailing = False
        while True:
            if healthy():
                self.send("WATCHDOG=1", *(["STATUS=running"] if ailing else []))
                ailing = False
            elif not ailing:
                log.error("the sealer has made no progress for too long: no watchdog pings until it does")
                self.send("STATUS=the sealer is not progressing")
                ailing = True
            await asyncio.sleep(self.watchdog_interval / 2)


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds of WatchdogSec, if systemd enabled the watchdog for this very process."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. the ExecStartPre check)
    return int(usec) / 1e6
