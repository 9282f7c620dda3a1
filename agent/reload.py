"""SIGHUP: the configuration file is read again and its sources replace the running
ones, while the sequencer, the sealer, the buffer and every service run on, so `seq`,
`b` and `boot` carry on as if nothing happened. Plant engineers add and change tags
without a restart, hence without a new boot in the data.

Only `sources` are reloaded: a changed key, buffer, MQTT or anchoring setting takes effect
at the next restart, and the log says which. A file that does not load leaves the running
configuration as it is, and the log says why, file:line:col, as `check-config` would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from agent.config import load_config
from agent.errors import ConfigError

log = logging.getLogger(__name__)


class Reload:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.requested = asyncio.Event()

    def install(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.requested.set)

    def sources(self, running: Any) -> list[Any] | None:
        """The new sources, or None when the file does not load (nothing changes then)."""
        self.requested.clear()
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            for line in exc.diagnostics().splitlines():
                log.error("reload refused, the running configuration stays: %s", line)
            return None
        later = [
            name
            for name in type(new).model_fields
            if name != "sources" and getattr(new, name) != getattr(running, name)
        ]
        if later:
            log.warning("reloaded the sources; changes to %s take effect at the next restart", ", ".join(later))
        log.info("reloaded: %d sources (%s)", len(new.sources), ", ".join(s.name for s in new.sources))
        return list(new.sources)
