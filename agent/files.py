"""Durable file writes shared by the agent and the factory tools: what was reported
written is on disk, and a new file has its final mode from its first byte."""

from __future__ import annotations

import os
from pathlib import Path


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path`, which must not exist, holding `data` on disk (fsync'd)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_directory(directory: Path) -> None:
    """Makes a rename or a new entry in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
