ALTER TABLE completions DROP COLUMN IF EXISTS usage_estimated;
