-- The prompt component's tables (schema prompt; search_path is set by the migrator).
-- Every row carries its tenant and every key starts with it.

-- One row per template name ever created: the version counter. It is kept when the name's
-- versions are all deleted, so version numbers are never reused and (tenant, name, version)
-- always means the same content (what makes caching compiled templates safe).
CREATE TABLE names (
    tenant       text        NOT NULL,
    name         text        NOT NULL,
    last_version integer     NOT NULL,
    -- Last change: a version created or deleted, a label set or removed (list order).
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name)
);
CREATE INDEX names_updated ON names (tenant, updated_at DESC, name DESC);

CREATE TABLE versions (
    tenant     text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL CHECK (version > 0),
    kind       text        NOT NULL CHECK (kind IN ('text', 'chat')),
    -- text: the template; chat: a JSON array of {"role", "content", "name"}.
    body       jsonb       NOT NULL,
    variables  text[]      NOT NULL,
    config     jsonb       NOT NULL DEFAULT '{}',
    metadata   jsonb       NOT NULL DEFAULT '{}',
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name, version),
    FOREIGN KEY (tenant, name) REFERENCES names (tenant, name)
);

-- Versions are immutable: no statement may change one (deleting is allowed).
CREATE FUNCTION versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'prompt template versions are immutable';
END
$$;
CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
    FOR EACH ROW EXECUTE FUNCTION versions_immutable();

-- Labels set by callers; `latest` is never stored (it is the newest existing version).
CREATE TABLE labels (
    tenant     text        NOT NULL,
    name       text        NOT NULL,
    label      text        NOT NULL CHECK (label <> 'latest'),
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name, label),
    FOREIGN KEY (tenant, name, version) REFERENCES versions (tenant, name, version)
);
CREATE INDEX labels_version ON labels (tenant, name, version);

-- Events written in the same transaction as the change they report and published after the
-- commit; a row left behind (NATS unreachable at that moment) is published by the outbox
-- flusher of any replica, with `msg_id` as Nats-Msg-Id so a repeat is stored once.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Nats-Msg-Id of the event: unique across databases sharing one NATS, unlike `id`.
    msg_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant     text        NOT NULL,
    event      text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
