"""The demo's MQTT broker: a `mosquitto` process of its own on 127.0.0.1, when Mosquitto is
installed, with a minimal configuration written in DIR/mosquitto (anonymous, no
persistence: the demo's buffer keeps what the broker has not acknowledged)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from agent.demo_plant import HOST, free_port
from agent.errors import EdgesealError

# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])
RUNNING = re.compile(rb"mosquitto version \S+ running")
START_TIMEOUT = 10.0  # s; mosquitto starts in milliseconds


class BrokerError(EdgesealError):
    """Mosquitto is installed but did not start; the message says why, from its log."""


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto", path=SEARCH_PATH)


class Mosquitto:
    """`with Mosquitto(executable, directory) as broker:` a broker at `broker.url`, stopped
    (SIGTERM, then waited for) at the end."""

    def __init__(self, executable: str, directory: Path) -> None:
        self._executable, self._directory = executable, directory
        self.port = free_port()
        self.url = f"mqtt://{HOST}:{self.port}"
        self.log = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Mosquitto:
        self._directory.mkdir(exist_ok=True)
        config = self._directory / "mosquitto.conf"
        config.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [self._executable, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_until_running()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=START_TIMEOUT)
            self._process = None

    def _wait_until_running(self) -> None:
        """Until mosquitto logs its "running" line: from then on it accepts connections."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while RUNNING.search(self.log.read_bytes()) is None:
            if self._process.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._process.returncode}: {self._last_lines()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not start within {START_TIMEOUT:g} s: {self._last_lines()}")
            time.sleep(0.01)

    def _last_lines(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
