DROP INDEX IF EXISTS completions_team_created_idx;
DROP INDEX IF EXISTS completions_key_name_created_idx;
ALTER TABLE usage_daily DROP COLUMN IF EXISTS team;
ALTER TABLE completions DROP COLUMN IF EXISTS team;
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_budget_complete,
    DROP COLUMN IF EXISTS budget_period, DROP COLUMN IF EXISTS budget_usd, DROP COLUMN IF EXISTS team_id;
DROP TABLE IF EXISTS teams;
