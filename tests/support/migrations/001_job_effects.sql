-- The job recorder's tables (schema job_recorder; search_path is set by the migrator).

-- One row per effect: the idempotency key is the job's message id within its tenant, so a
-- redelivered job finds its effect already written and writes nothing.
CREATE TABLE effects (
    tenant      text        NOT NULL,
    message_id  text        NOT NULL,
    token       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, message_id)
);
CREATE INDEX effects_token ON effects (tenant, token);

-- One row per attempt that reached the handler, committed before the attempt can fail, so
-- tests count deliveries and measure the gaps between them.
CREATE TABLE attempts (
    tenant      text        NOT NULL,
    token       text        NOT NULL,
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    message_id  text        NOT NULL,
    delivery    integer     NOT NULL,
    worker_pid  integer     NOT NULL,
    -- Whether this attempt wrote the effect (false: failed, or found it already written).
    wrote       boolean     NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, token, seq)
);
