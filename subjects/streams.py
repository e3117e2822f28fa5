"""JetStream streams and consumers of the fleet, and their provisioning.

Provisioning creates what is missing and verifies what exists without overwriting it: an
operator who raised a retention limit or a replica count keeps the change, and is told where
the stream differs from the fleet's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from subjects import (
    STREAM_DLQ,
    STREAM_EVENTS,
    STREAM_JOBS,
    filter_subject,
)

DAY = 86_400.0

STREAMS: tuple[StreamConfig, ...] = (
    StreamConfig(
        name=STREAM_EVENTS,
        description="Every tenant's component events; limits retention, replayable.",
        subjects=[filter_subject("evt")],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=30 * DAY,
        duplicate_window=120.0,
    ),
    StreamConfig(
        name=STREAM_JOBS,
        description="Work queue of jobs; each message is removed once a worker acks it.",
        subjects=[filter_subject("job")],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=7 * DAY,
        duplicate_window=120.0,
    ),
    StreamConfig(
        name=STREAM_DLQ,
        description="Jobs that failed permanently or ran out of attempts, with the reason.",
        subjects=[filter_subject("dlq")],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=30 * DAY,
        duplicate_window=120.0,
    ),
)

# Fields compared when a stream already exists; differences are reported, never undone.
_COMPARED = ("subjects", "retention", "storage", "max_age", "duplicate_window", "discard")


@dataclass
class StreamReport:
    """What provisioning found for one stream."""

    name: str
    created: bool
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field: (ours, theirs)
    messages: int = 0
    bytes: int = 0
    consumers: int = 0


async def provision_streams(js: JetStreamContext) -> list[StreamReport]:
    """Create missing streams; verify existing ones. Raises if one can't take its subjects."""
    reports = []
    for config in STREAMS:
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
            created = False
        except NotFoundError:
            info = await js.add_stream(config)
            created = True
        theirs = info.config
        diffs = {
            name: (getattr(config, name), getattr(theirs, name))
            for name in _COMPARED
            if getattr(config, name) != getattr(theirs, name)
        }
        if "subjects" in diffs and not set(config.subjects or []) <= set(theirs.subjects or []):
            raise RuntimeError(
                f"stream {config.name} exists without the subjects {config.subjects}: "
                f"it has {theirs.subjects}; fix it or delete it"
            )
        reports.append(
            StreamReport(
                name=config.name,
                created=created,
                differences=diffs,
                messages=info.state.messages,
                bytes=info.state.bytes,
                consumers=info.state.consumer_count,
            )
        )
    return reports


def consumer_config(
    durable: str,
    filter_subjects: tuple[str, ...],
    *,
    description: str,
    max_deliver: int,
    ack_wait: float,
    max_ack_pending: int,
) -> ConsumerConfig:
    """A durable pull consumer through which one component's replicas share its messages."""
    single = len(filter_subjects) == 1
    return ConsumerConfig(
        durable_name=durable,
        description=description,
        filter_subject=filter_subjects[0] if single else None,
        filter_subjects=None if single else list(filter_subjects),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create a consumer if missing; an existing one is left as configured."""
    assert config.durable_name is not None
    try:
        await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
