ALTER TABLE usage_daily DROP COLUMN IF EXISTS unpriced_requests, DROP COLUMN IF EXISTS cost_usd;
ALTER TABLE completions DROP COLUMN IF EXISTS cost_saved_usd, DROP COLUMN IF EXISTS cost_usd;
