-- completions partitioned by day (UTC) on created_at: retention drops a whole day's partition instead of deleting
-- rows in batches (no bloat, no VACUUM debt). Every row is kept. A unique index on a partitioned table must include
-- the partition key, so (request_id, created_at) is unique: the gateway's journal carries each row's created_at, and a
-- replayed row conflicts and is skipped. Rows outside every day's partition (the worker down for a week) land in
-- completions_default; helixagent_completions_partition(day) creates a day's partition and moves that day's rows
-- out of the default one. The worker's partitions job creates them days ahead.
ALTER TABLE completions RENAME TO completions_unpartitioned;
ALTER INDEX completions_pkey RENAME TO completions_unpartitioned_pkey;
ALTER INDEX completions_request_id_idx RENAME TO completions_unpartitioned_request_id_idx;
ALTER INDEX completions_created_at_idx RENAME TO completions_unpartitioned_created_at_idx;
ALTER INDEX completions_key_created_idx RENAME TO completions_unpartitioned_key_created_idx;
ALTER SEQUENCE completions_id_seq RENAME TO completions_unpartitioned_id_seq;

CREATE SEQUENCE completions_id_seq;
CREATE TABLE completions (
    id                  bigint      NOT NULL DEFAULT nextval('completions_id_seq'),
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
    dropped_hints       text,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE completions_id_seq OWNED BY completions.id;
CREATE UNIQUE INDEX completions_request_id_idx ON completions (request_id, created_at);
CREATE INDEX completions_created_at_idx ON completions (created_at);
CREATE INDEX completions_key_created_idx ON completions (key_id, created_at);
CREATE TABLE completions_default PARTITION OF completions DEFAULT;

CREATE FUNCTION helixagent_completions_partition(day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    part text := 'completions_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    CREATE TEMP TABLE helixagent_moving_rows AS
        SELECT * FROM completions_default WHERE created_at >= lo AND created_at < hi;
    DELETE FROM completions_default WHERE created_at >= lo AND created_at < hi;
    EXECUTE format('CREATE TABLE %I PARTITION OF completions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    INSERT INTO completions SELECT * FROM helixagent_moving_rows;
    DROP TABLE helixagent_moving_rows;
    RETURN true;
END $$;

-- A partition for every day that has rows, and for yesterday, today and the week ahead.
SELECT helixagent_completions_partition(day)
FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS day FROM completions_unpartitioned
      UNION
      SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day')::date) days
ORDER BY day;

INSERT INTO completions (id, request_id, key_id, key_name, model, provider, endpoint, status, error_type, prompt_tokens,
    completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated, dropped_hints)
SELECT id, request_id, key_id, key_name, model, provider, endpoint, status, error_type, prompt_tokens,
    completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated, dropped_hints
FROM completions_unpartitioned;
SELECT setval('completions_id_seq', coalesce((SELECT max(id) FROM completions), 0) + 1, false);
DROP TABLE completions_unpartitioned;
