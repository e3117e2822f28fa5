-- Drafts: generated definitions waiting for (or past) approval; every query names the tenant.
CREATE TABLE drafts (
    tenant            text        NOT NULL,
    draft_id          text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('agent', 'tool')),
    prompt            text        NOT NULL,
    llm_model         text        NOT NULL DEFAULT '',
    additional_config jsonb       NOT NULL DEFAULT '{}',
    spec              jsonb       NOT NULL,
    status            text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved')),
    version           integer     NOT NULL DEFAULT 1,
    resource_id       text        NOT NULL,
    feedback          jsonb       NOT NULL DEFAULT '[]',
    cached            boolean     NOT NULL DEFAULT false,
    model_calls       integer     NOT NULL DEFAULT 0,
    created_by        text        NOT NULL DEFAULT '',
    approved_by       text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, draft_id)
);
CREATE INDEX drafts_newest ON drafts (tenant, created_at DESC, draft_id DESC);

-- Ratings of agents and tools, each at the version it was given for.
CREATE TABLE ratings (
    tenant        text        NOT NULL,
    rating_id     text        NOT NULL,
    resource_type text        NOT NULL CHECK (resource_type IN ('agent', 'tool')),
    resource_id   text        NOT NULL,
    version       integer     NOT NULL,
    rating        smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    feedback      text        NOT NULL DEFAULT '',
    metadata      jsonb       NOT NULL DEFAULT '{}',
    user_id       text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, rating_id)
);
CREATE INDEX ratings_newest ON ratings (tenant, resource_type, resource_id, created_at DESC, rating_id DESC);
