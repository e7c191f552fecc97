-- Teams and budgets. A key may belong to one team; the key's own budget and its team's both apply. A budget is an
-- amount in USD (exact decimals) per period: 'daily' or 'monthly' (calendar, UTC) or 'total'. A key's budget belongs
-- to its name: every version of the key (rotation) shares it. Each request's row names the team it was served for, so
-- the spend of a period can be rebuilt from completions (Redis holds only the running counters) and usage can be
-- reported by team as it was at the time.
CREATE TABLE teams (
    id              uuid PRIMARY KEY,
    name            text        NOT NULL UNIQUE,
    budget_usd      numeric(20,10) CHECK (budget_usd >= 0),
    budget_period   text        CHECK (budget_period IN ('daily', 'monthly', 'total')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((budget_usd IS NULL) = (budget_period IS NULL))
);
ALTER TABLE api_keys ADD COLUMN team_id uuid REFERENCES teams(id),
    ADD COLUMN budget_usd numeric(20,10) CHECK (budget_usd >= 0),
    ADD COLUMN budget_period text CHECK (budget_period IN ('daily', 'monthly', 'total')),
    ADD CONSTRAINT api_keys_budget_complete CHECK ((budget_usd IS NULL) = (budget_period IS NULL));
ALTER TABLE completions ADD COLUMN team text;
ALTER TABLE usage_daily ADD COLUMN team text NOT NULL DEFAULT '';
-- What a key name or a team spent in a period is read from here when Redis has no counter for it.
CREATE INDEX completions_key_name_created_idx ON completions (key_name, created_at) WHERE cost_usd IS NOT NULL;
CREATE INDEX completions_team_created_idx ON completions (team, created_at) WHERE team IS NOT NULL AND cost_usd IS NOT NULL;
