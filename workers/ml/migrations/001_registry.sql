-- The ML component's tables (schema ml; search_path is set by the migrator). Every row carries
-- its tenant and every key starts with it.

-- One row per model name ever created: the version counter. Kept when every version is
-- deleted, so version numbers are never reused and (tenant, name, version) always means the
-- same artifact (what makes caching loaded models safe).
CREATE TABLE models (
    tenant       text        NOT NULL,
    name         text        NOT NULL,
    last_version integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Last change: a version registered or deleted, an alias set or removed.
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name)
);

-- Numbered immutable versions (MLflow's model version): what was trained, on what, by whom.
CREATE TABLE versions (
    tenant          text        NOT NULL,
    name            text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    model_type      text        NOT NULL,
    params          jsonb       NOT NULL,
    metrics         jsonb       NOT NULL,
    -- {"features": [{"name", "type", "categories", "nullable"}], "task", "target", "classes"}
    signature       jsonb       NOT NULL,
    -- The training distribution of each feature, for drift (workers/ml/drift.py).
    profile         jsonb       NOT NULL,
    data_sha256     text        NOT NULL,
    data_object     text        NOT NULL DEFAULT '',
    training_rows   bigint      NOT NULL,
    artifact_object text        NOT NULL,
    artifact_sha256 text        NOT NULL,
    artifact_bytes  bigint      NOT NULL,
    -- The training that registered it: a redone training registers nothing twice.
    training_id     text        NOT NULL,
    trained_by      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name, version),
    UNIQUE (tenant, training_id),
    FOREIGN KEY (tenant, name) REFERENCES models (tenant, name)
);

CREATE FUNCTION versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model versions are immutable';
END
$$;
CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
    FOR EACH ROW EXECUTE FUNCTION versions_immutable();

-- Aliases (production, staging, custom) that move between versions.
CREATE TABLE aliases (
    tenant     text        NOT NULL,
    name       text        NOT NULL,
    alias      text        NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name, alias),
    FOREIGN KEY (tenant, name, version) REFERENCES versions (tenant, name, version)
);
CREATE INDEX aliases_version ON aliases (tenant, name, version);

-- Trainings, from the request that queued them to the version they registered.
CREATE TABLE trainings (
    tenant      text        NOT NULL,
    training_id text        NOT NULL,
    name        text        NOT NULL,
    model_type  text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    stage       text        NOT NULL DEFAULT 'queued',
    progress    double precision NOT NULL DEFAULT 0,
    metrics     jsonb       NOT NULL DEFAULT '{}',
    error       text        NOT NULL DEFAULT '',
    version     integer     NOT NULL DEFAULT 0,
    attempts    integer     NOT NULL DEFAULT 0,
    trained_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (tenant, training_id)
);
CREATE INDEX trainings_created ON trainings (tenant, created_at DESC, training_id DESC);
CREATE INDEX trainings_name ON trainings (tenant, name, created_at DESC, training_id DESC);

-- Batch predictions of a file, run as jobs.
CREATE TABLE prediction_jobs (
    tenant      text        NOT NULL,
    job_id      text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    progress    double precision NOT NULL DEFAULT 0,
    input       text        NOT NULL,
    output      text        NOT NULL,
    rows        bigint      NOT NULL DEFAULT 0,
    error       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (tenant, job_id)
);

-- Recent prediction inputs per version (at most the component's drift window), for drift.
CREATE TABLE prediction_inputs (
    tenant     text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL,
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    features   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name, version, id)
);
