-- API keys: only a hash of each key is stored.
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    name            text        NOT NULL,
    key_prefix      text        NOT NULL,
    key_hash        bytea       NOT NULL UNIQUE,
    scope           text        NOT NULL CHECK (scope IN ('client', 'admin')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    rotated_from    uuid REFERENCES api_keys(id) ON DELETE SET NULL,
    rpm_limit       integer,
    tpm_limit       integer,
    allowed_models  text[]
);
CREATE INDEX api_keys_name_idx ON api_keys (name);

-- One row per served request (the usage ledger).
CREATE TABLE completions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          text        NOT NULL,
    key_id              uuid,
    key_name            text,
    model               text        NOT NULL,
    provider            text,
    endpoint            text        NOT NULL,
    status              smallint    NOT NULL,
    error_type          text,
    prompt_tokens       integer     NOT NULL DEFAULT 0,
    completion_tokens   integer     NOT NULL DEFAULT 0,
    latency_ms          double precision NOT NULL,
    ttft_ms             double precision,
    cache_hit           boolean     NOT NULL DEFAULT false,
    stream              boolean     NOT NULL DEFAULT false,
    attempts            smallint    NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX completions_request_id_idx ON completions (request_id);
CREATE INDEX completions_created_at_idx ON completions (created_at);
CREATE INDEX completions_key_created_idx ON completions (key_id, created_at);
