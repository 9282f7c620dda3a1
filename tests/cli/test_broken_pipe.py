"""`edgeseal schema | head -1`: a reader that closes the pipe early gets no traceback."""

from __future__ import annotations

import subprocess
import sys

RUN_CLI = "import sys; from agent.cli import main; sys.exit(main())"


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first byte
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
