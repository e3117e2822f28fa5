-- LLM operations of every tenant, one row per operation id. Every query filters by tenant
-- first; the indexes all lead with it. Not partitioned: a partitioned table needs the time in
-- its primary key, and the key that makes ingestion idempotent is (tenant, id) alone.
CREATE TABLE operations (
    tenant            text             NOT NULL,
    id                text             NOT NULL,
    occurred_at       timestamptz      NOT NULL,
    recorded_at       timestamptz      NOT NULL DEFAULT clock_timestamp(),
    operation_type    text             NOT NULL,
    model             text             NOT NULL,
    provider          text             NOT NULL DEFAULT '',
    prompt_tokens     bigint           NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens bigint           NOT NULL CHECK (completion_tokens >= 0),
    total_tokens      bigint           NOT NULL CHECK (total_tokens >= 0),
    cost_usd          double precision NOT NULL CHECK (cost_usd >= 0),
    latency_ms        double precision NOT NULL CHECK (latency_ms >= 0),
    ttft_ms           double precision CHECK (ttft_ms >= 0),
    status            text             NOT NULL CHECK (status IN ('success', 'error')),
    error_class       text             NOT NULL DEFAULT '',
    error_message     text             NOT NULL DEFAULT '',
    user_id           text             NOT NULL DEFAULT '',
    agent_id          text             NOT NULL DEFAULT '',
    cache_hit         boolean          NOT NULL DEFAULT false,
    metadata          jsonb            NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, id)
);
-- Listing newest first (keyset on occurred_at, id) and every time-range aggregate.
CREATE INDEX operations_time ON operations (tenant, occurred_at DESC, id DESC);
CREATE INDEX operations_model ON operations (tenant, model, occurred_at DESC);
CREATE INDEX operations_agent ON operations (tenant, agent_id, occurred_at DESC);
CREATE INDEX operations_user ON operations (tenant, user_id, occurred_at DESC);

-- Spend thresholds, one per tenant and period kind.
CREATE TABLE budgets (
    tenant     text             NOT NULL,
    period     text             NOT NULL CHECK (period IN ('day', 'month')),
    limit_usd  double precision NOT NULL CHECK (limit_usd > 0),
    updated_at timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, period)
);

-- Spend per UTC day and month, added to in the transaction that stores an operation: the
-- row lock orders concurrent inserts, so each sees the total including every earlier one.
CREATE TABLE spend (
    tenant       text             NOT NULL,
    period       text             NOT NULL CHECK (period IN ('day', 'month')),
    period_start timestamptz      NOT NULL,
    spent_usd    double precision NOT NULL,
    PRIMARY KEY (tenant, period, period_start)
);

-- One row per budget crossed per period, written in the transaction of the crossing operation;
-- the key makes the alert once per period. `published` is set once the event is in AI_EVENTS.
CREATE TABLE budget_alerts (
    tenant       text             NOT NULL,
    period       text             NOT NULL,
    period_start timestamptz      NOT NULL,
    limit_usd    double precision NOT NULL,
    spent_usd    double precision NOT NULL,
    operation_id text             NOT NULL,
    published    boolean          NOT NULL DEFAULT false,
    created_at   timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, period, period_start)
);
CREATE INDEX budget_alerts_unpublished ON budget_alerts (tenant) WHERE NOT published;
