-- Daily usage rollups, written by the worker's rollup job and read by GET /admin/usage.
CREATE TABLE usage_daily (
    day                 date        NOT NULL,
    key_id              uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    key_name            text        NOT NULL DEFAULT '',
    model               text        NOT NULL,
    provider            text        NOT NULL DEFAULT '',
    requests            bigint      NOT NULL,
    errors              bigint      NOT NULL,
    prompt_tokens       bigint      NOT NULL,
    completion_tokens   bigint      NOT NULL,
    latency_p50_ms      double precision,
    latency_p95_ms      double precision,
    latency_p99_ms      double precision,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, key_id, model, provider)
);

-- Bookkeeping of the worker's periodic jobs (last run, outcome, rows touched).
CREATE TABLE worker_jobs (
    job                 text PRIMARY KEY,
    last_started_at     timestamptz,
    last_succeeded_at   timestamptz,
    last_failed_at      timestamptz,
    last_error          text,
    last_duration_ms    double precision,
    last_rows           bigint,
    consecutive_failures integer NOT NULL DEFAULT 0
);
