-- Rollups of `operations` per tenant and UTC hour and day (`grain`), so that `metrics` and
-- `cost_analysis` over long ranges read a few thousand rows instead of every operation.
-- Triggers on `operations` keep them in the transaction that changes the operations, from the
-- rows a statement really inserted or deleted (an insert skipped by ON CONFLICT DO NOTHING adds
-- nothing). Sums are numeric: exact whatever the order of additions and subtractions, so a row
-- deleted and stored again gives the same totals. A group whose operations were all deleted
-- keeps a row of zeros; queries skip groups without operations.
--
-- Users and agents are rolled up on their own, not with model and operation type: the
-- combinations of all four are about as many rows as operations (benchmarks/llmops.py: 600 an
-- hour for 1,400 operations, against 24 of model and type). `metrics` filtered by user or agent
-- reads raw rows through their indexes.
CREATE TABLE rollups (
    tenant            text        NOT NULL,
    grain             text        NOT NULL CHECK (grain IN ('hour', 'day')),
    start             timestamptz NOT NULL,
    model             text        NOT NULL,
    operation_type    text        NOT NULL,
    operations        bigint      NOT NULL,
    errors            bigint      NOT NULL,
    cache_hits        bigint      NOT NULL,
    prompt_tokens     bigint      NOT NULL,
    completion_tokens bigint      NOT NULL,
    total_tokens      bigint      NOT NULL,
    cost_usd          numeric     NOT NULL,
    latency_ms        numeric     NOT NULL,
    PRIMARY KEY (tenant, grain, start, model, operation_type)
);

-- Operations, tokens and cost per user (dimension 'user_id') and per agent ('agent_id').
CREATE TABLE rollup_callers (
    tenant       text        NOT NULL,
    grain        text        NOT NULL CHECK (grain IN ('hour', 'day')),
    start        timestamptz NOT NULL,
    dimension    text        NOT NULL CHECK (dimension IN ('user_id', 'agent_id')),
    key          text        NOT NULL,
    operations   bigint      NOT NULL,
    total_tokens bigint      NOT NULL,
    cost_usd     numeric     NOT NULL,
    PRIMARY KEY (tenant, grain, start, dimension, key)
);

-- Latency and time-to-first-token histograms: how many operations fall in each bucket.
CREATE TABLE rollup_latency (
    tenant         text        NOT NULL,
    grain          text        NOT NULL CHECK (grain IN ('hour', 'day')),
    start          timestamptz NOT NULL,
    model          text        NOT NULL,
    operation_type text        NOT NULL,
    bucket         integer     NOT NULL,
    latencies      bigint      NOT NULL,
    ttfts          bigint      NOT NULL,
    PRIMARY KEY (tenant, grain, start, model, operation_type, bucket)
);

-- Log-spaced buckets: 0 holds [0, 0.01) ms, bucket i >= 1 holds [0.01 * 1.1^(i-1), 0.01 * 1.1^i).
-- workers/llmops/aggregates.py reports a bucket as 2ab/(a+b) of its bounds a, b: within
-- (1.1 - 1)/(1.1 + 1) = 4.8 % of any value in it. ln() of each side, not of a quotient, so
-- that no latency up to the largest double overflows. NULL gives NULL without STRICT, which
-- would keep the planner from inlining it into the queries that bucket raw rows.
CREATE FUNCTION latency_bucket(ms double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN ms < 0.01 THEN 0
        ELSE 1 + floor((ln(ms) - ln(0.01::float8)) / ln(1.1::float8))::integer END;

-- The statement that adds the rows of `source` to every rollup, each with its `sign` (1 added,
-- -1 removed). `source` selects tenant, occurred_at, model, operation_type, user_id, agent_id,
-- status, cache_hit, the three token counts, cost_usd, latency_ms, ttft_ms and sign. Each row
-- is read once and grouped into its hour and its day by one GROUPING SETS pass per rollup.
-- Each rollup's rows are locked in key order, and the tables always in the same order, so
-- that concurrent writers queue on a hot row instead of deadlocking.
CREATE FUNCTION rollup_statement(source text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN format($sql$
WITH changed AS (%s),
base AS (
    SELECT tenant, date_trunc('hour', occurred_at, 'UTC') AS hour,
        date_trunc('day', occurred_at, 'UTC') AS day, model, operation_type, user_id, agent_id,
        sign, CASE WHEN status = 'error' THEN sign ELSE 0 END AS errors,
        CASE WHEN cache_hit THEN sign ELSE 0 END AS cache_hits,
        sign * prompt_tokens AS prompt_tokens,
        sign * completion_tokens AS completion_tokens, sign * total_tokens AS total_tokens,
        sign * cost_usd::numeric AS cost_usd, sign * latency_ms::numeric AS latency_ms,
        llmops.latency_bucket(latency_ms) AS latency_bucket,
        llmops.latency_bucket(ttft_ms) AS ttft_bucket
    FROM changed
),
totals AS (
    INSERT INTO llmops.rollups AS r (tenant, grain, start, model, operation_type, operations,
        errors, cache_hits, prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms)
    SELECT tenant, CASE WHEN grouping(hour) = 0 THEN 'hour' ELSE 'day' END, coalesce(hour, day),
        model, operation_type, sum(sign), sum(errors), sum(cache_hits), sum(prompt_tokens),
        sum(completion_tokens), sum(total_tokens), sum(cost_usd), sum(latency_ms)
    FROM base GROUP BY GROUPING SETS ((tenant, hour, model, operation_type),
        (tenant, day, model, operation_type))
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant, grain, start, model, operation_type) DO UPDATE SET
        operations = r.operations + excluded.operations,
        errors = r.errors + excluded.errors,
        cache_hits = r.cache_hits + excluded.cache_hits,
        prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = r.completion_tokens + excluded.completion_tokens,
        total_tokens = r.total_tokens + excluded.total_tokens,
        cost_usd = r.cost_usd + excluded.cost_usd,
        latency_ms = r.latency_ms + excluded.latency_ms
),
callers AS (
    INSERT INTO llmops.rollup_callers AS r (tenant, grain, start, dimension, key, operations,
        total_tokens, cost_usd)
    SELECT tenant, CASE WHEN grouping(hour) = 0 THEN 'hour' ELSE 'day' END, coalesce(hour, day),
        c.dimension, c.key, sum(sign), sum(total_tokens), sum(cost_usd)
    FROM base CROSS JOIN LATERAL (VALUES ('user_id', user_id), ('agent_id', agent_id))
        AS c(dimension, key)
    GROUP BY GROUPING SETS ((tenant, hour, c.dimension, c.key), (tenant, day, c.dimension, c.key))
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant, grain, start, dimension, key) DO UPDATE SET
        operations = r.operations + excluded.operations,
        total_tokens = r.total_tokens + excluded.total_tokens,
        cost_usd = r.cost_usd + excluded.cost_usd
),
latency AS (
    INSERT INTO llmops.rollup_latency AS r (tenant, grain, start, model, operation_type, bucket,
        latencies, ttfts)
    SELECT tenant, CASE WHEN grouping(hour) = 0 THEN 'hour' ELSE 'day' END, coalesce(hour, day),
        model, operation_type, bucket, sum(latencies), sum(ttfts)
    FROM (
        SELECT tenant, hour, day, model, operation_type, latency_bucket AS bucket,
            sign AS latencies, 0 AS ttfts
        FROM base
        UNION ALL
        SELECT tenant, hour, day, model, operation_type, ttft_bucket, 0, sign
        FROM base WHERE ttft_bucket IS NOT NULL
    ) AS b
    GROUP BY GROUPING SETS ((tenant, hour, model, operation_type, bucket),
        (tenant, day, model, operation_type, bucket))
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (tenant, grain, start, model, operation_type, bucket) DO UPDATE SET
        latencies = r.latencies + excluded.latencies,
        ttfts = r.ttfts + excluded.ttfts
)
SELECT 1
$sql$, source);

-- The columns rollup_statement reads, from a relation aliased `o`.
CREATE FUNCTION rollup_columns() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN 'o.tenant, o.occurred_at, o.model, o.operation_type, o.user_id, o.agent_id, o.status,'
        ' o.cache_hit, o.prompt_tokens, o.completion_tokens, o.total_tokens, o.cost_usd,'
        ' o.latency_ms, o.ttft_ms';

CREATE FUNCTION roll_up() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE llmops.rollup_statement(
            format('SELECT %s, 1 AS sign FROM added o', llmops.rollup_columns()));
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE llmops.rollup_statement(
            format('SELECT %s, -1 AS sign FROM removed o', llmops.rollup_columns()));
    ELSE
        EXECUTE llmops.rollup_statement(format(
            'SELECT %1$s, 1 AS sign FROM added o UNION ALL SELECT %1$s, -1 FROM removed o',
            llmops.rollup_columns()));
    END IF;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION forget_rollups() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    TRUNCATE llmops.rollups, llmops.rollup_callers, llmops.rollup_latency;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER operations_rollup_insert AFTER INSERT ON operations
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION roll_up();
CREATE TRIGGER operations_rollup_delete AFTER DELETE ON operations
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION roll_up();
CREATE TRIGGER operations_rollup_update AFTER UPDATE ON operations
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION roll_up();
CREATE TRIGGER operations_rollup_truncate AFTER TRUNCATE ON operations
    FOR EACH STATEMENT EXECUTE FUNCTION forget_rollups();

-- Recompute the rollups of one tenant (every tenant when NULL) from its operations. Writers of
-- operations wait meanwhile: a row committed between the delete and the recount would count
-- twice. Used here to fill the rollups of rows stored before them, and by `llmops rebuild`.
CREATE FUNCTION refresh_rollups(only_tenant text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    LOCK TABLE llmops.operations IN SHARE MODE;
    DELETE FROM llmops.rollups WHERE only_tenant IS NULL OR tenant = only_tenant;
    DELETE FROM llmops.rollup_callers WHERE only_tenant IS NULL OR tenant = only_tenant;
    DELETE FROM llmops.rollup_latency WHERE only_tenant IS NULL OR tenant = only_tenant;
    EXECUTE llmops.rollup_statement(format(
        'SELECT %s, 1 AS sign FROM llmops.operations o WHERE $1::text IS NULL OR o.tenant = $1',
        llmops.rollup_columns())) USING only_tenant;
END
$fn$;

SELECT refresh_rollups(NULL);
