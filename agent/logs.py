"""The agent's log lines: one event per line, with its level, on standard error.

Under systemd (stderr is the journal's stream: $JOURNAL_STREAM) each line starts with its
syslog priority, `<3>` for an error, so `journalctl -p err` finds errors, and carries no
time stamp of its own: the journal records one. Elsewhere a line starts with the time.
Line breaks inside an event (a traceback, a multi-line diagnostic) are escaped as `\\n`,
so one event stays one line for every log shipper that splits on newlines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

# syslog priorities (sd-daemon(3)) by logging level
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


class JournalFormatter(OneLineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


def setup(*, verbose: bool, stream: TextIO = sys.stderr, environ: Mapping[str, str] = os.environ) -> None:
    handler = logging.StreamHandler(stream)
    if _is_journal(stream, environ):
        handler.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:  # web3 reports each connection it closes at INFO: noise in a report
        logging.getLogger("web3").setLevel(logging.WARNING)


def _is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it connected."""
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"
