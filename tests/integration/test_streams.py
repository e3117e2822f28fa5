"""Stream provisioning: create what is missing, never overwrite what an operator changed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from subjects import STREAM_DLQ, STREAM_EVENTS, STREAM_JOBS, request_subject
from subjects.streams import provision_streams
from tests.conftest import NatsFactory

DAY = 86_400.0


@pytest.fixture
async def fresh(nats_factory: NatsFactory) -> AsyncIterator[NATS]:
    """A connection to a nats-server of this test alone, with no streams yet."""
    conn = await nats.connect(nats_factory().url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_first_provisioning_creates_the_three_streams(fresh: NATS) -> None:
    """On an empty server AI_EVENTS, AI_JOBS and AI_DLQ are created with the fleet's defaults."""
    reports = await provision_streams(fresh.jetstream())
    assert [(r.name, r.created, r.differences) for r in reports] == [
        (STREAM_EVENTS, True, {}),
        (STREAM_JOBS, True, {}),
        (STREAM_DLQ, True, {}),
    ]
    info = await fresh.jetstream().stream_info(STREAM_EVENTS)
    assert info.config.max_age == 30 * DAY


async def test_provisioning_again_changes_nothing(fresh: NATS) -> None:
    """A second run finds the streams as it left them: nothing created, nothing different."""
    await provision_streams(fresh.jetstream())
    reports = await provision_streams(fresh.jetstream())
    assert [(r.created, r.differences) for r in reports] == [(False, {})] * 3


async def test_an_operators_change_is_kept_and_reported(fresh: NATS) -> None:
    """A retention the operator raised survives provisioning and is listed as a difference."""
    js = fresh.jetstream()
    await provision_streams(js)
    info = await js.stream_info(STREAM_EVENTS)
    info.config.max_age = 90 * DAY
    await js.update_stream(info.config)

    reports = {r.name: r for r in await provision_streams(js)}

    assert (await js.stream_info(STREAM_EVENTS)).config.max_age == 90 * DAY
    assert reports[STREAM_EVENTS].differences == {"max_age": (30 * DAY, 90 * DAY)}
    assert reports[STREAM_JOBS].differences == {}


async def test_a_stream_without_the_fleets_subjects_is_an_error(fresh: NATS) -> None:
    """An existing AI_EVENTS that does not capture ai.v1.*.evt.> stops provisioning."""
    js = fresh.jetstream()
    await js.add_stream(StreamConfig(name=STREAM_EVENTS, subjects=["something.else"]))
    with pytest.raises(RuntimeError, match="AI_EVENTS"):
        await provision_streams(js)


async def test_no_stream_captures_request_subjects(fresh: NATS) -> None:
    """A request subject belongs to no stream, so requesters never get a PubAck as a reply."""
    js = fresh.jetstream()
    await provision_streams(js)
    with pytest.raises(NotFoundError):
        await js.find_stream_name_by_subject(request_subject("acme", "cache", "get"))
