-- The ingestion component's tables (schema ingestion; search_path is set by the migrator).
-- Every row carries its tenant and every key starts with it.

-- One row per file: where its bytes are (an object in the tenant's part of the files bucket),
-- what they are, and how far processing got.
CREATE TABLE files (
    tenant                text             NOT NULL,
    file_id               uuid             NOT NULL,
    -- The object's name inside the tenant's part of the bucket (uploads/<uuid>).
    object_name           text             NOT NULL,
    -- The client's name, for display only (never a path).
    file_name             text             NOT NULL,
    title                 text             NOT NULL DEFAULT '',
    declared_content_type text             NOT NULL DEFAULT '',
    detected_type         text             NOT NULL,
    size_bytes            bigint           NOT NULL CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the bytes: the same bytes are one file per tenant.
    sha256                text             NOT NULL,
    status                text             NOT NULL
        CHECK (status IN ('uploaded', 'processing', 'ingested', 'failed')),
    -- The current processing run; a job of another run changes nothing.
    run_id                text             NOT NULL DEFAULT '',
    progress              double precision NOT NULL DEFAULT 0,
    pages_done            integer          NOT NULL DEFAULT 0,
    pages_total           integer          NOT NULL DEFAULT 0,
    characters            bigint           NOT NULL DEFAULT 0,
    sections              integer          NOT NULL DEFAULT 0,
    document_id           text             NOT NULL DEFAULT '',
    -- {code, message, details} of the failure that ended the last run.
    failure               jsonb,
    metadata              jsonb            NOT NULL DEFAULT '{}',
    auto_ingest           boolean          NOT NULL DEFAULT true,
    options               jsonb            NOT NULL DEFAULT '{}',
    created_at            timestamptz      NOT NULL DEFAULT clock_timestamp(),
    updated_at            timestamptz      NOT NULL DEFAULT clock_timestamp(),
    processed_at          timestamptz,
    PRIMARY KEY (tenant, file_id)
);
CREATE UNIQUE INDEX files_sha256 ON files (tenant, sha256);
CREATE UNIQUE INDEX files_object ON files (tenant, object_name);
CREATE INDEX files_newest ON files (tenant, created_at DESC, file_id DESC);
CREATE INDEX files_status ON files (tenant, status, created_at DESC, file_id DESC);

-- Chunked uploads over NATS: a session and the parts received so far (each part an object
-- parts/<upload_id>/<index> until the upload completes).
CREATE TABLE uploads (
    tenant        text        NOT NULL,
    upload_id     uuid        NOT NULL,
    file_name     text        NOT NULL,
    content_type  text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant, upload_id)
);
CREATE INDEX uploads_expiry ON uploads (expires_at);

CREATE TABLE upload_parts (
    tenant     text    NOT NULL,
    upload_id  uuid    NOT NULL,
    index      integer NOT NULL CHECK (index >= 0),
    size_bytes bigint  NOT NULL CHECK (size_bytes >= 0),
    PRIMARY KEY (tenant, upload_id, index),
    FOREIGN KEY (tenant, upload_id) REFERENCES uploads (tenant, upload_id) ON DELETE CASCADE
);
