-- The gateway's semantic response cache (schema gateway; search_path is set by the migrator).
-- A lookup filters by tenant and scope inside the nearest-neighbour query itself, so another
-- tenant's rows are never candidates (not filtered out afterwards).
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

CREATE TABLE semantic_cache (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    -- Hash of the model, the parameters and every message but the last user message: only
    -- requests that differ in the wording of that message can share a reply.
    scope text NOT NULL,
    -- all-MiniLM-L6-v2 embedding of the last user message (unit length).
    embedding public.vector(384) NOT NULL,
    -- The serialized GenerateResponse.
    response bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX semantic_cache_scope ON semantic_cache (tenant, scope, expires_at);
CREATE INDEX semantic_cache_embedding ON semantic_cache
    USING hnsw (embedding public.vector_cosine_ops);
