ALTER TABLE completions DROP COLUMN IF EXISTS dropped_hints;
