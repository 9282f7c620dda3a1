"""The OPC UA driver: one session to one server, rebuilt from the configuration after
every fault.

    connect        security, user, server certificate checked against the trust list;
                   namespaces, start time and operation limits read
    serve          one subscription per subscribe group and per event group (fresh,
                   with node ids resolved in this session's namespaces), one task per
                   poll group, and a watch task
    fault          transport lost; the server restarted or changed its namespaces
                   (ServerStatus.StartTime, NamespaceArray: checked every check_interval,
                   because a session can survive a restart); a subscription ended by the
                   server or silent beyond its keep-alive; a request failed
    then           every tag reads Bad_CommunicationError (or Bad_Timeout) at the moment
                   of the fault, the session is closed, and the driver connects again
                   after reconnect_delay, doubling up to reconnect_delay_max

So data resumes after every server restart (the subscriptions are new), and the time the
server was away shows as Bad readings, never as silence. Items the server refuses
(unknown node, no access) read Bad with the server's StatusCode and are asked for again
every REPROBE_AFTER seconds; the other tags are unaffected.
Counters: connects, faults, poll_overruns, items_refused.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from asyncua import ua

from drivers.api import DriverContext, Quality, Reading, ReadingSink
from drivers.opcua.config import PollGroup, SourceConfig, SubscribeGroup
from drivers.opcua.monitoring import DataMonitor, EventMonitor, Monitor
from drivers.opcua.pki import ServerCertificateRefused
from drivers.opcua.security import SecurityRefused, SecuritySettings
from drivers.opcua.session import ServerChanged, Session, UnknownNamespace
from drivers.opcua.values import bad_readings, reading

T = TypeVar("T")

REPROBE_AFTER = 60.0  # seconds before asking again for items the server refused
WATCH_TICK = 1.0  # how often subscriptions' silence is looked at, in seconds


class Fault(Exception):
    """Why the session is given up (its text is logged once), and what the tags read
    meanwhile: Bad_Timeout when the server stopped answering, else Bad_CommunicationError."""

    def __init__(self, reason: str, quality: int = Quality.BAD_COMMUNICATION_ERROR) -> None:
        super().__init__(reason)
        self.quality = quality


class OpcUaDriver:
    def __init__(self, config: SourceConfig, sink: ReadingSink, context: DriverContext) -> None:
        self._config, self._sink, self._context = config, sink, context
        self._log = context.logger
        self._monitors: list[Monitor] = []
        self._polls: list[PollGroup] = []
        for group in config.groups:
            if isinstance(group, SubscribeGroup):
                self._monitors.append(DataMonitor(group, sink, self._fault_from_monitor, self._log))
            else:
                self._polls.append(group)
        self._monitors += [EventMonitor(group, sink, self._fault_from_monitor, self._log) for group in config.events]
        self._all_tags = [name for _, name in config.tag_names()]
        self._fault: asyncio.Future[str] | None = None
        self._problem: str | None = None  # what was last logged as wrong, to log changes only

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                session = await self._connect()
            except (OSError, TimeoutError, ua.UaError, SecurityRefused, ServerCertificateRefused, Fault) as error:
                failures += 1
                await self._lost(_describe(error), _quality(error))
            else:
                failures = 0
                try:
                    await self._serve(session)
                except Fault as fault:
                    failures += 1
                    await self._lost(str(fault), fault.quality)
                finally:
                    await session.close()
            delay = min(self._config.reconnect_delay * 2 ** max(failures - 1, 0), self._config.reconnect_delay_max)
            await asyncio.sleep(delay)

    async def _connect(self) -> Session:
        config = self._config
        settings = SecuritySettings(
            policy=config.security.policy,
            mode=config.security.message_mode(),
            application_uri=config.app_uri(),
            pki_dir=Path(self._context.state_dir or ".") / "pki",
            username=config.auth.username if config.auth else None,
            password=await self._password(),
        )
        session = await Session.open(config.url, settings, config.timeout, config.session_timeout)
        self._context.count("connects")
        if session.own_certificate is not None and session.own_certificate.new_because:
            self._log.info("client certificate: %s", session.own_certificate.new_because)
        return session

    async def _password(self) -> str | None:
        auth = self._config.auth
        if auth is None:
            return None
        if auth.password_env is not None:
            password = os.environ.get(auth.password_env)
            if password is None:
                raise Fault(f"the password variable {auth.password_env} is not set in the agent's environment")
            return password
        assert auth.password_secret is not None
        if self._context.secret is None:
            raise Fault(f"password_secret {auth.password_secret!r} needs the TPM (identity.signer: tpm)")
        try:
            return await self._context.secret(auth.password_secret)
        except Exception as error:  # the agent's errors say what is wrong (no file, another TPM …)
            raise Fault(f"cannot read the password secret {auth.password_secret!r}: {error}") from None

    async def _serve(self, session: Session) -> None:
        """Until a fault: raises Fault. Everything runs in the group's tasks, none in its
        body: a request cancelled as it fails raises a subclass of CancelledError (asyncua's
        wait_for2), which a TaskGroup takes for an error only when the body raises it."""
        self._fault = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._start_monitors(session))
                tasks.create_task(self._watch(session))
                for group in self._polls:
                    tasks.create_task(self._poll(session, group))
                tasks.create_task(self._until_fault(session))
        except* Fault as group:
            fault = group.exceptions[0]
        finally:
            self._fault = None
        self._context.count("faults")
        raise fault

    async def _start_monitors(self, session: Session) -> None:
        for monitor in self._monitors:
            await self._checked(monitor.start(session, self._config.session_timeout))
        self._recovered()

    async def _until_fault(self, session: Session) -> None:
        """Raises Fault when a monitor reports one or the transport is lost."""
        assert self._fault is not None
        lost = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait({self._fault, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        raise Fault(self._fault.result() if self._fault.done() else "the connection to the server was lost")

    async def _checked(self, request: Awaitable[T]) -> T:
        """A request whose failure is a fault of the session."""
        try:
            return await request
        except (OSError, TimeoutError, ua.UaError) as error:
            raise Fault(_describe(error), _quality(error)) from None

    def _fault_from_monitor(self, reason: str) -> None:
        if self._fault is not None and not self._fault.done():
            self._fault.set_result(reason)

    async def _watch(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self._config.check_interval
        reprobe_at = loop.time() + REPROBE_AFTER
        while True:
            await asyncio.sleep(WATCH_TICK)
            for monitor in self._monitors:
                silence = monitor.silent_for()
                if silence is not None:
                    raise Fault(f"no message from the server for {silence:.0f}s on a subscription")
            if loop.time() >= check_at:
                check_at += self._config.check_interval
                try:
                    await self._checked(session.check())
                except ServerChanged as change:
                    raise Fault(str(change)) from None
            if loop.time() >= reprobe_at:
                reprobe_at += REPROBE_AFTER
                for monitor in self._monitors:
                    await self._checked(monitor.retry_failed())

    async def _poll(self, session: Session, group: PollGroup) -> None:
        tags = [tag.name for tag in group.tags]
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._sink.submit(await self._read(session, tags, group))
            next_at += group.interval
            delay = next_at - loop.time()
            if delay < 0:  # a read longer than its interval: skip missed reads, never overlap them
                missed = math.ceil(-delay / group.interval)
                self._context.count("poll_overruns", missed)
                next_at += missed * group.interval
                delay = next_at - loop.time()
            await asyncio.sleep(delay)

    async def _read(self, session: Session, tags: list[str], group: PollGroup) -> list[Reading]:
        """One reading per tag: the value read, or Bad for a node the server lacks."""
        nodes: list[ua.NodeId] = []
        known: list[str] = []
        unknown: list[str] = []
        for name, tag in zip(tags, group.tags):
            try:
                nodes.append(session.node_id(tag.ref()))
                known.append(name)
            except UnknownNamespace:
                unknown.append(name)
        with self._context.timing_read():  # polls only: subscriptions have no read to time
            values = await self._checked(session.read(nodes))
        return [reading(name, value) for name, value in zip(known, values)] + bad_readings(
            unknown, Quality.BAD_NODE_ID_UNKNOWN
        )

    async def _lost(self, reason: str, quality: int) -> None:
        """Every tag reads Bad from now; the reason is logged when it changes."""
        await self._sink.submit(bad_readings(self._all_tags, quality, time.time_ns()))
        if reason != self._problem:
            self._problem = reason
            self._log.warning("%s unavailable: %s", self._config.url, reason)

    def _recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            self._log.info("%s available again", self._config.url)


def _quality(error: BaseException) -> int:
    if isinstance(error, Fault):
        return error.quality
    return Quality.BAD_TIMEOUT if isinstance(error, TimeoutError) else Quality.BAD_COMMUNICATION_ERROR


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, ua.UaStatusCodeError):
        return f"the server answered {ua.StatusCode(error.code).name}"
    return str(error) or type(error).__name__


def create(config: SourceConfig, sink: ReadingSink, context: DriverContext) -> OpcUaDriver:
    return OpcUaDriver(config, sink, context)
