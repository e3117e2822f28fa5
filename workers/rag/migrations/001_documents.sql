-- The RAG component's tables (schema rag; search_path is set by the migrator).
-- Every row carries its tenant and every key starts with it.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

-- The tenant's corpus version: incremented by every write that changes what a search can
-- return, in the write's transaction. Cached search and query results are keyed by it, so a
-- write invalidates them all at once without deleting anything. `chunks` and `lexemes` (the
-- sum of the chunks' tsvector lengths) give the keyword leg N and the average chunk length.
CREATE TABLE corpora (
    tenant  text   PRIMARY KEY,
    version bigint NOT NULL,
    chunks  bigint NOT NULL DEFAULT 0,
    lexemes bigint NOT NULL DEFAULT 0
);

-- Chunks of the tenant containing each lexeme (document frequency, for the keyword leg's
-- BM25 idf), kept in the transactions that insert and delete chunks.
CREATE TABLE lexemes (
    tenant text   NOT NULL,
    lexeme text   NOT NULL,
    chunks bigint NOT NULL,
    PRIMARY KEY (tenant, lexeme)
);

CREATE TABLE documents (
    tenant          text        NOT NULL,
    id              text        NOT NULL,
    title           text        NOT NULL,
    source          text        NOT NULL DEFAULT '',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    -- Kept so a document can be chunked again (reprocess, a new embedding model) and so that
    -- a chunk's offsets point at text that can be shown.
    content         text        NOT NULL,
    content_hash    text        NOT NULL,
    version         integer     NOT NULL DEFAULT 1 CHECK (version > 0),
    status          text        NOT NULL CHECK (status IN ('processing', 'ready', 'failed')),
    error           text        NOT NULL DEFAULT '',
    chunk_size      integer     NOT NULL,
    chunk_overlap   integer     NOT NULL,
    chunk_count     integer     NOT NULL DEFAULT 0,
    embedding_model text        NOT NULL DEFAULT '',
    embedding_dims  integer     NOT NULL DEFAULT 0,
    chunks_embedded integer     NOT NULL DEFAULT 0,
    chunks_total    integer     NOT NULL DEFAULT 0,
    job_id          text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, id)
);
CREATE INDEX documents_newest ON documents (tenant, created_at DESC, id DESC);
CREATE INDEX documents_metadata ON documents USING gin (metadata jsonb_path_ops);

-- A chunk is stored with its text, its offsets in the document, its embedding and its
-- full-text vector. `embedding` has no fixed dimension: the model and dimension are recorded
-- per row, and the HNSW index is an expression index per dimension in use, created by the
-- worker at start (see docs/architecture.md, RAG). `source` and `metadata` are copies of the
-- document's, so every filter is a condition on this table inside the nearest-neighbour scan.
CREATE TABLE chunks (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    tenant          text        NOT NULL,
    document_id     text        NOT NULL,
    ordinal         integer     NOT NULL,
    version         integer     NOT NULL,
    text            text        NOT NULL,
    start_char      integer     NOT NULL,
    end_char        integer     NOT NULL,
    tokens          integer     NOT NULL,
    source          text        NOT NULL,
    metadata        jsonb       NOT NULL,
    embedding       public.vector NOT NULL,
    embedding_model text        NOT NULL,
    embedding_dims  integer     NOT NULL,
    -- The document's title (weight A) and the chunk's text (weight B).
    tsv             tsvector    NOT NULL,
    PRIMARY KEY (tenant, document_id, ordinal),
    FOREIGN KEY (tenant, document_id) REFERENCES documents (tenant, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX chunks_id ON chunks (id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_metadata ON chunks USING gin (metadata jsonb_path_ops);
CREATE INDEX chunks_model ON chunks (tenant, embedding_model, embedding_dims);
