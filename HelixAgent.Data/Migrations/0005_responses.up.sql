-- Stored OpenAI Responses (`store: true`, the default): the response as answered (its `output` is the conversation's
-- next turn) and the input items of its request. `previous_response_id` chains a conversation; the gateway rebuilds a continued conversation's
-- input from the chain. A response belongs to the key that made it (`key_id`, or a key rotated from it). The worker's
-- responses-retention job deletes rows older than Responses:RetentionDays.
CREATE TABLE responses (
    id                   text        PRIMARY KEY,
    key_id               uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    model                text        NOT NULL,
    previous_response_id text,
    input                jsonb       NOT NULL,
    response             jsonb       NOT NULL
);
CREATE INDEX responses_created_at_idx ON responses (created_at);
