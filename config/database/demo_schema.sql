-- The demo schema of the local stack: nine namespaces of a small LLM platform, with foreign
-- keys, indexes, check constraints, row-level security and a few seed rows.
-- Idempotent: `scripts/services.sh up` applies it on every start
--   psql -X -v ON_ERROR_STOP=1 -1 -f config/database/demo_schema.sql
-- and config/database/expected_schema.yaml declares exactly what it creates.
-- Extensions: only what stock Debian PostgreSQL 15 ships (pgcrypto); no pgvector here.

SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA IF NOT EXISTS auth;
CREATE SCHEMA IF NOT EXISTS models;
CREATE SCHEMA IF NOT EXISTS chat;
CREATE SCHEMA IF NOT EXISTS rag;
CREATE SCHEMA IF NOT EXISTS billing;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE SCHEMA IF NOT EXISTS config;
CREATE SCHEMA IF NOT EXISTS monitoring;

-- auth ----------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS auth.users (
    id            uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_check CHECK (position('@' in email) > 1)
);

CREATE TABLE IF NOT EXISTS auth.api_keys (
    id         uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    key_hash   text        NOT NULL,
    label      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX IF NOT EXISTS api_keys_user_id_idx ON auth.api_keys (user_id);
ALTER TABLE auth.api_keys ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS api_keys_owner ON auth.api_keys;
CREATE POLICY api_keys_owner ON auth.api_keys
    USING (user_id::text = current_setting('app.user_id', true));

-- models --------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS models.models (
    id             text        NOT NULL PRIMARY KEY,
    provider       text        NOT NULL,
    context_window integer     NOT NULL,
    is_default     boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_context_window_check CHECK (context_window > 0)
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_default ON models.models (is_default)
    WHERE is_default;

CREATE TABLE IF NOT EXISTS models.deployments (
    id       serial  NOT NULL PRIMARY KEY,
    model_id text    NOT NULL REFERENCES models.models (id) ON DELETE CASCADE,
    endpoint text    NOT NULL,
    weight   integer NOT NULL DEFAULT 1,
    CONSTRAINT deployments_model_id_endpoint_key UNIQUE (model_id, endpoint),
    CONSTRAINT deployments_weight_check CHECK (weight > 0)
);

-- chat ----------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS chat.sessions (
    id         uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    model_id   text        REFERENCES models.models (id) ON DELETE SET NULL,
    title      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_title_check CHECK (char_length(title) <= 200)
);
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON chat.sessions (user_id);
ALTER TABLE chat.sessions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sessions_owner ON chat.sessions;
CREATE POLICY sessions_owner ON chat.sessions
    USING (user_id::text = current_setting('app.user_id', true));

CREATE TABLE IF NOT EXISTS chat.messages (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES chat.sessions (id) ON DELETE CASCADE,
    role       text        NOT NULL,
    content    text        NOT NULL,
    tokens     integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_role_check CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    CONSTRAINT messages_tokens_check CHECK (tokens >= 0)
);
CREATE INDEX IF NOT EXISTS messages_session_id_created_at_idx
    ON chat.messages (session_id, created_at);

-- rag -----------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS rag.documents (
    id         uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    owner_id   uuid        REFERENCES auth.users (id) ON DELETE SET NULL,
    source     text        NOT NULL,
    title      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- embedding_id points into the vector database: a logical reference, no constraint.
CREATE TABLE IF NOT EXISTS rag.chunks (
    id           bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id  uuid    NOT NULL REFERENCES rag.documents (id) ON DELETE CASCADE,
    ordinal      integer NOT NULL,
    content      text    NOT NULL,
    embedding_id uuid,
    CONSTRAINT chunks_document_id_ordinal_key UNIQUE (document_id, ordinal)
);

-- billing -------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS billing.accounts (
    id       uuid          NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id  uuid          NOT NULL REFERENCES auth.users (id) ON DELETE RESTRICT,
    balance  numeric(12,2) NOT NULL DEFAULT 0,
    currency char(3)       NOT NULL DEFAULT 'USD',
    CONSTRAINT accounts_user_id_key UNIQUE (user_id),
    CONSTRAINT accounts_balance_check CHECK (balance >= 0)
);

CREATE TABLE IF NOT EXISTS billing.usage_records (
    id                bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id        uuid          NOT NULL REFERENCES billing.accounts (id),
    model_id          text          NOT NULL,
    prompt_tokens     integer       NOT NULL,
    completion_tokens integer       NOT NULL,
    cost              numeric(12,6) NOT NULL,
    recorded_at       timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS usage_records_account_id_recorded_at_idx
    ON billing.usage_records (account_id, recorded_at);

-- audit ---------------------------------------------------------------------------------------
-- actor_id is a logical reference to auth.users (audit rows outlive their users).
CREATE TABLE IF NOT EXISTS audit.events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id    uuid,
    action      text        NOT NULL,
    target      text,
    payload     jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_actor_id_idx ON audit.events (actor_id);
CREATE INDEX IF NOT EXISTS events_occurred_at_idx ON audit.events USING brin (occurred_at);

-- analytics -----------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS analytics.daily_usage (
    day      date   NOT NULL,
    model_id text   NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, model_id)
);

-- config --------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS config.settings (
    key        text        NOT NULL PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS config.feature_flags (
    name            text     NOT NULL PRIMARY KEY,
    enabled         boolean  NOT NULL DEFAULT false,
    rollout_percent smallint NOT NULL DEFAULT 0,
    CONSTRAINT feature_flags_rollout_percent_check CHECK (rollout_percent BETWEEN 0 AND 100)
);

-- monitoring ----------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS monitoring.health_checks (
    id         bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service    text             NOT NULL,
    status     text             NOT NULL,
    latency_ms double precision,
    checked_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT health_checks_status_check CHECK (status IN ('ok', 'degraded', 'down'))
);
CREATE INDEX IF NOT EXISTS health_checks_service_checked_at_idx
    ON monitoring.health_checks (service, checked_at DESC);

-- seed rows (fixed keys, so re-applying changes nothing) ---------------------------------------
INSERT INTO auth.users (id, email, password_hash) VALUES
    ('00000000-0000-4000-8000-000000000001', 'demo@citadel.invalid', crypt('demo', gen_salt('bf', 4)))
    ON CONFLICT (id) DO NOTHING;
INSERT INTO models.models (id, provider, context_window, is_default) VALUES
    ('llama-3-8b', 'local', 8192, true),
    ('mistral-7b', 'local', 32768, false)
    ON CONFLICT (id) DO NOTHING;
INSERT INTO models.deployments (model_id, endpoint) VALUES
    ('llama-3-8b', 'http://127.0.0.1:58001'),
    ('mistral-7b', 'http://127.0.0.1:58002')
    ON CONFLICT (model_id, endpoint) DO NOTHING;
INSERT INTO billing.accounts (id, user_id, balance) VALUES
    ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 10.00)
    ON CONFLICT (id) DO NOTHING;
INSERT INTO chat.sessions (id, user_id, model_id, title) VALUES
    ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-000000000001',
     'llama-3-8b', 'hello')
    ON CONFLICT (id) DO NOTHING;
INSERT INTO config.feature_flags (name, enabled, rollout_percent) VALUES
    ('streaming', true, 100)
    ON CONFLICT (name) DO NOTHING;
