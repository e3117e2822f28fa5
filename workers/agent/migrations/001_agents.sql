-- The agent component (schema agent; search_path is set by the migrator). Every table is keyed
-- by tenant first and every statement of the component names its tenant.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

CREATE TABLE agents (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    definition jsonb NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id)
);
CREATE INDEX agents_newest ON agents (tenant, created_at DESC, agent_id DESC);

CREATE TABLE tools (
    tenant text NOT NULL,
    tool_id text NOT NULL,
    definition jsonb NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, tool_id)
);
CREATE INDEX tools_newest ON tools (tenant, created_at DESC, tool_id DESC);

-- An agent's allowlist, as rows: a tool an agent lists cannot be deleted (the foreign key).
CREATE TABLE agent_tools (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    tool_id text NOT NULL,
    position integer NOT NULL,
    PRIMARY KEY (tenant, agent_id, tool_id),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE,
    FOREIGN KEY (tenant, tool_id) REFERENCES tools ON DELETE RESTRICT
);
CREATE INDEX agent_tools_tool ON agent_tools (tenant, tool_id);

-- Permissions per user; resource_id '*' covers every resource of the type.
CREATE TABLE grants (
    tenant text NOT NULL,
    resource_type text NOT NULL CHECK (resource_type IN ('agent', 'tool')),
    resource_id text NOT NULL,
    user_id text NOT NULL,
    permission text NOT NULL CHECK (permission IN ('read', 'execute', 'create', 'delete', 'admin')),
    granted_by text NOT NULL DEFAULT '',
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, resource_type, resource_id, user_id, permission)
);
CREATE INDEX grants_user ON grants (tenant, user_id, resource_type);

CREATE TABLE sessions (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    session_id text NOT NULL,
    user_id text NOT NULL DEFAULT '',
    message_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id, session_id),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE
);
CREATE INDEX sessions_newest ON sessions (tenant, agent_id, updated_at DESC, session_id DESC);
CREATE INDEX sessions_user ON sessions (tenant, agent_id, user_id);

CREATE TABLE messages (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    session_id text NOT NULL,
    seq integer NOT NULL,
    message jsonb NOT NULL,
    run_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Recall (conversation_search) ranks messages by full-text match.
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(message->>'content', ''))) STORED,
    PRIMARY KEY (tenant, agent_id, session_id, seq),
    FOREIGN KEY (tenant, agent_id, session_id) REFERENCES sessions ON DELETE CASCADE
);
CREATE INDEX messages_search ON messages USING gin (search);

CREATE TABLE runs (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    run_id text NOT NULL,
    session_id text NOT NULL DEFAULT '',
    task_id text NOT NULL DEFAULT '',
    user_id text NOT NULL DEFAULT '',
    agent_version integer NOT NULL,
    outcome text NOT NULL DEFAULT 'running',
    turns integer NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    -- The messages the run began with (system prompt, context, the new user message): a run
    -- resumed after a crash is these plus its steps' messages.
    initial jsonb NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (tenant, agent_id, run_id),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE
);

CREATE TABLE run_steps (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    run_id text NOT NULL,
    seq integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('model', 'tool')),
    turn integer NOT NULL DEFAULT 0,
    tool_name text NOT NULL DEFAULT '',
    tool_call_id text NOT NULL DEFAULT '',
    arguments text NOT NULL DEFAULT '',
    result_bytes integer NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    finish_reason text NOT NULL DEFAULT '',
    duration_ms double precision NOT NULL DEFAULT 0,
    message jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id, run_id, seq),
    FOREIGN KEY (tenant, agent_id, run_id) REFERENCES runs ON DELETE CASCADE
);

CREATE TABLE tasks (
    tenant text NOT NULL,
    task_id text NOT NULL,
    agent_id text NOT NULL,
    task_type text NOT NULL,
    parameters jsonb NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    progress double precision NOT NULL DEFAULT 0,
    result text NOT NULL DEFAULT '',
    outcome text NOT NULL DEFAULT '',
    error text NOT NULL DEFAULT '',
    run_id text NOT NULL DEFAULT '',
    attempts integer NOT NULL DEFAULT 0,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, task_id),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE
);
CREATE INDEX tasks_newest ON tasks (tenant, agent_id, created_at DESC, task_id DESC);

CREATE TABLE core_blocks (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    user_id text NOT NULL,
    label text NOT NULL,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id, user_id, label),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE
);

-- Archival memory. The vector column takes any dimension (the embedding model is configured);
-- searches are exact within one user's memories, filtered by tenant, agent, user and dimension.
CREATE TABLE memories (
    tenant text NOT NULL,
    agent_id text NOT NULL,
    user_id text NOT NULL,
    memory_id text NOT NULL,
    text text NOT NULL,
    content_hash bytea NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    embedding public.vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id, memory_id),
    UNIQUE (tenant, agent_id, user_id, content_hash),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents ON DELETE CASCADE
);
CREATE INDEX memories_newest ON memories (tenant, agent_id, user_id, created_at DESC, memory_id DESC);
