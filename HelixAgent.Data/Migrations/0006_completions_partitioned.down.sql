-- Back to one table, keeping every row (and the ids).
CREATE TABLE completions_unpartitioned (
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
    created_at          timestamptz NOT NULL DEFAULT now(),
    usage_estimated     boolean     NOT NULL DEFAULT false,
    dropped_hints       text
);
INSERT INTO completions_unpartitioned (id, request_id, key_id, key_name, model, provider, endpoint, status, error_type,
    prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated, dropped_hints)
OVERRIDING SYSTEM VALUE
SELECT id, request_id, key_id, key_name, model, provider, endpoint, status, error_type,
    prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated, dropped_hints
FROM completions;
SELECT setval(pg_get_serial_sequence('completions_unpartitioned', 'id'), coalesce((SELECT max(id) FROM completions_unpartitioned), 0) + 1, false);
DROP TABLE completions;
DROP FUNCTION helixagent_completions_partition(date);
ALTER TABLE completions_unpartitioned RENAME TO completions;
ALTER INDEX completions_unpartitioned_pkey RENAME TO completions_pkey;
ALTER SEQUENCE completions_unpartitioned_id_seq RENAME TO completions_id_seq;
CREATE UNIQUE INDEX completions_request_id_idx ON completions (request_id);
CREATE INDEX completions_created_at_idx ON completions (created_at);
CREATE INDEX completions_key_created_idx ON completions (key_id, created_at);
