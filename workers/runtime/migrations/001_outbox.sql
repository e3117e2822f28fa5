-- The fleet's transactional outbox (workers/runtime/outbox.py): an event is written here in the
-- transaction of the change it reports and published to AI_EVENTS after the commit. A row left
-- behind (NATS unreachable at that moment, or a crash in between) is published by the flusher
-- of any process, with `msg_id` as its Nats-Msg-Id, so a repeat is stored once.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Nats-Msg-Id of the event: unique across databases sharing one NATS, unlike `id`.
    msg_id     text        NOT NULL,
    tenant     text        NOT NULL,
    component  text        NOT NULL,
    event      text        NOT NULL,
    -- The protobuf message's full name (the event's Aifleet-Type) and its serialized bytes.
    type       text        NOT NULL,
    payload    bytea       NOT NULL,
    -- Trace context and request ids of the request that made the change.
    headers    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX outbox_tenant ON outbox (tenant, component);
