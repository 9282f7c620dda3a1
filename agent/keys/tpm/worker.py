"""The one thread that talks to the TPM.

An ESAPI context is not thread-safe, and a TPM command blocks for as long as the chip
takes (about 200 ms for a hardware ECDSA signature), so the agent gives the context to one
dedicated thread and awaits its results: the event loop never blocks on the TPM, and
commands reach the TPM one at a time, in order. When the TPM becomes unreachable the
context is dropped and the next command opens a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tpm2_pytss import ESAPI

from agent.errors import TpmUnreachable
from agent.keys.tpm import esys
from agent.keys.tpm.tcti import Tcti

R = TypeVar("R")


class TpmWorker:
    def __init__(self, tcti: Tcti) -> None:
        self.tcti = tcti
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeseal-tpm")
        self._esapi: ESAPI | None = None  # touched only on the worker thread

    async def call(self, command: Callable[[ESAPI], R]) -> R:
        """Run `command(esapi)` on the TPM thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, command)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._drop_context)
        self._executor.shutdown(wait=True)

    def _run(self, command: Callable[[ESAPI], R]) -> R:
        if self._esapi is None:
            self._esapi = esys.open_context(self.tcti)
        try:
            return command(self._esapi)
        except TpmUnreachable:
            self._drop_context()
            raise

    def _drop_context(self) -> None:
        if self._esapi is not None:
            try:
                self._esapi.close()
            finally:
                self._esapi = None
