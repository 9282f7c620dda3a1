"""Subscriptions: a tag group's data changes, or an event group's events, as readings.

A `Monitor` is created from the configuration and started on each new session: it
creates a fresh subscription and its monitored items (node ids resolved in that
session's namespaces), so nothing of a previous session is trusted. Notifications are
handled straight from asyncua's publish loop, whole PublishResults at a time, without
a task or an object per notification (FIELD-NOTES: asyncua's per-notification handler
tasks cost ~21 us each, and its iterator queue drops silently).

Faults are reported, not handled here: a subscription that times out on the server, or
goes silent longer than its keep-alive promises, calls `on_fault`; the driver then
starts over with a new session.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from asyncua import ua

from drivers.api import Quality, Reading, ReadingSink
from drivers.opcua.config import Deadband, EventGroup, SubscribeGroup
from drivers.opcua.events import EventSelection, UnknownEventType
from drivers.opcua.nodeid import NodeRef
from drivers.opcua.session import Session, UnknownNamespace
from drivers.opcua.values import bad_readings, reading


class Refused(Exception):
    """An item that cannot be asked for in this session; `quality` is what its tags read."""

    def __init__(self, quality: int) -> None:
        super().__init__(hex(quality))
        self.quality = quality


KEEPALIVE_EVERY = 5.0  # seconds between keep-alives of a quiet subscription, roughly
_DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


class Monitor:
    """One subscription's life on one session; subclasses say what it monitors."""

    def __init__(
        self, publishing_interval: float, sink: ReadingSink, on_fault: Callable[[str], None], log: logging.Logger
    ) -> None:
        self._publishing_interval = publishing_interval
        self._sink, self._on_fault, self._log = sink, on_fault, log
        self._session: Session | None = None
        self._subscription_id = 0
        self._max_silence = math.inf
        self._last_heard = 0.0
        self.failed: list[int] = []  # indexes of items the server refused, tried again later

    async def start(self, session: Session, session_timeout: float) -> None:
        """A new subscription on `session` with every item; refused items read Bad."""
        self._session, self.failed = session, []
        keepalive = max(1, math.ceil(KEEPALIVE_EVERY / self._publishing_interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self._publishing_interval * 1000,
            RequestedMaxKeepAliveCount=keepalive,
            # the subscription outlives a short outage as long as the session does
            RequestedLifetimeCount=max(3 * keepalive, math.ceil(session_timeout / self._publishing_interval)),
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        self._last_heard = time.monotonic()
        result = await session.ua.create_subscription(params, self._on_publish)
        self._subscription_id = result.SubscriptionId
        interval = result.RevisedPublishingInterval / 1000 or self._publishing_interval
        # The server promises a message at least every interval x keep-alive count.
        self._max_silence = 2 * interval * result.RevisedMaxKeepAliveCount + 2 * KEEPALIVE_EVERY
        await self._prepare(session)
        await self._create_items(session, list(range(self._item_count())))
        await self._started(session)

    def silent_for(self) -> float | None:
        """Seconds without any message for this subscription, when that is longer than
        its keep-alive allows; None while it is healthy."""
        silence = time.monotonic() - self._last_heard
        return silence if silence > self._max_silence else None

    async def retry_failed(self) -> None:
        """Ask again for the items the server refused (a node may have appeared)."""
        if self.failed and self._session is not None:
            indexes, self.failed = self.failed, []
            await self._prepare(self._session)
            await self._create_items(self._session, indexes)
            await self._started(self._session)

    async def _create_items(self, session: Session, indexes: list[int]) -> None:
        refused: list[Reading] = []
        requests: list[tuple[int, ua.MonitoredItemCreateRequest]] = []
        for index in indexes:
            try:
                requests.append((index, self._item_request(session, index)))
            except UnknownNamespace:
                self.failed.append(index)
                refused += self._refused(index, Quality.BAD_NODE_ID_UNKNOWN)
            except Refused as refusal:
                self.failed.append(index)
                refused += self._refused(index, refusal.quality)
        step = session.max_items_per_call
        for start in range(0, len(requests), step):
            batch = requests[start : start + step]
            params = ua.CreateMonitoredItemsParameters(
                SubscriptionId=self._subscription_id,
                TimestampsToReturn=ua.TimestampsToReturn.Source,  # the reading's time; no server times to decode
                ItemsToCreate=[request for _, request in batch],
            )
            results = await session.ua.create_monitored_items(params)
            for (index, _), result in zip(batch, results):
                if not result.StatusCode.is_good():  # per item, not an exception (FIELD-NOTES)
                    self.failed.append(index)
                    refused += self._refused(index, result.StatusCode.value)
        if refused:
            await self._sink.submit(refused)

    async def _on_publish(self, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop, which awaits it: back pressure from the
        sink slows the loop, and the server keeps what is not acknowledged yet."""
        self._last_heard = time.monotonic()
        readings: list[Reading] = []
        try:
            for notification in result.NotificationMessage.NotificationData or ():
                if isinstance(notification, ua.StatusChangeNotification):
                    status = notification.Status
                    self._on_fault(f"the server ended the subscription ({status.name if status else 'no status'})")
                else:
                    readings += self._readings(notification)
        except Exception:  # a bug here must not pass unseen inside asyncua's loop
            self._log.exception("cannot handle a notification")
            self._on_fault("a notification could not be handled")
        if readings:
            await self._sink.submit(readings)

    def _item_count(self) -> int:
        raise NotImplementedError

    def _item_request(self, session: Session, index: int) -> ua.MonitoredItemCreateRequest:
        raise NotImplementedError

    def _refused(self, index: int, quality: int) -> list[Reading]:
        raise NotImplementedError

    def _readings(self, notification: Any) -> list[Reading]:
        raise NotImplementedError

    async def _prepare(self, session: Session) -> None:
        """Anything to learn from the server before the items are made."""

    async def _started(self, session: Session) -> None:
        """Anything to do once the items exist (alarms: ask for the active ones)."""


def _item(node: ua.NodeId, handle: int, sampling: float, queue: int, filter_: Any) -> ua.MonitoredItemCreateRequest:
    parameters = ua.MonitoringParameters(
        ClientHandle=handle, SamplingInterval=sampling, QueueSize=queue, DiscardOldest=True, Filter=filter_
    )
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=parameters,
    )


class DataMonitor(Monitor):
    """The tags of one subscribe group; the client handle of a tag is its index."""

    def __init__(
        self, group: SubscribeGroup, sink: ReadingSink, on_fault: Callable[[str], None], log: logging.Logger
    ) -> None:
        super().__init__(group.publishing_interval, sink, on_fault, log)
        self.tags = [tag.name for tag in group.tags]
        self._refs: list[NodeRef] = [tag.ref() for tag in group.tags]
        self._filters = [_filter(tag.deadband or group.deadband) for tag in group.tags]
        self._sampling, self._queue = group.sampling() * 1000, group.queue()

    def _item_count(self) -> int:
        return len(self.tags)

    def _item_request(self, session: Session, index: int) -> ua.MonitoredItemCreateRequest:
        return _item(session.node_id(self._refs[index]), index, self._sampling, self._queue, self._filters[index])

    def _refused(self, index: int, quality: int) -> list[Reading]:
        return bad_readings([self.tags[index]], quality)

    def _readings(self, notification: Any) -> list[Reading]:
        if not isinstance(notification, ua.DataChangeNotification):
            return []
        tags = self.tags
        return [reading(tags[item.ClientHandle], item.Value) for item in notification.MonitoredItems]


def _filter(deadband: Deadband | None) -> ua.DataChangeFilter | None:
    if deadband is None:
        return None
    return ua.DataChangeFilter(
        Trigger=ua.DataChangeTrigger.StatusValue,
        DeadbandType=_DEADBAND_TYPES[deadband.type],
        DeadbandValue=deadband.value,
    )


class EventMonitor(Monitor):
    """The events of one notifier, each a reading of the event group's tag."""

    def __init__(
        self, group: EventGroup, sink: ReadingSink, on_fault: Callable[[str], None], log: logging.Logger
    ) -> None:
        super().__init__(group.publishing_interval, sink, on_fault, log)
        self.tag, self._group = group.name, group
        self._selection: EventSelection | None = None

    def _item_count(self) -> int:
        return 1

    async def _prepare(self, session: Session) -> None:
        try:
            self._selection = await EventSelection.build(self._group, session)
        except (UnknownNamespace, UnknownEventType):
            self._selection = None  # the item is refused below, and tried again later

    def _item_request(self, session: Session, index: int) -> ua.MonitoredItemCreateRequest:
        if self._selection is None:
            raise Refused(Quality.BAD_NODE_ID_UNKNOWN)
        notifier = session.node_id(self._group.notifier_ref())
        request = _item(notifier, index, 0, self._group.queue_size, self._selection.event_filter())
        request.ItemToMonitor.AttributeId = ua.AttributeIds.EventNotifier
        return request

    def _refused(self, index: int, quality: int) -> list[Reading]:
        return bad_readings([self.tag], quality)

    def _readings(self, notification: Any) -> list[Reading]:
        if not isinstance(notification, ua.EventNotificationList) or self._selection is None:
            return []
        selection = self._selection
        return [
            Reading(self.tag, ts, value, Quality.GOOD)
            for ts, value in (selection.reading(event.EventFields) for event in notification.Events)
            if value is not None
        ]

    async def _started(self, session: Session) -> None:
        if self._group.alarms and not self.failed:
            await _refresh_conditions(session, self._subscription_id, self._log)


async def _refresh_conditions(session: Session, subscription_id: int, log: logging.Logger) -> None:
    """ConditionRefresh (Part 9, 5.5.7): the server sends every condition that is
    retained now (active or unacknowledged alarms), so an alarm raised while the
    connection was down is not missed."""
    request = ua.CallMethodRequest(
        ObjectId=ua.NodeId(ua.ObjectIds.ConditionType),
        MethodId=ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
        InputArguments=[ua.Variant(subscription_id, ua.VariantType.UInt32)],
    )
    results: Sequence[Any] = await session.client.uaclient.call([request])
    status = results[0].StatusCode
    if not status.is_good():
        log.warning("the server refuses ConditionRefresh (%s): alarms active before now are not reported", status.name)
