-- A row whose token counts the gateway estimated (4 characters a token) because its provider never reported usage:
-- a stream the client left, or that broke or timed out, before the provider's final usage chunk.
ALTER TABLE completions ADD COLUMN usage_estimated boolean NOT NULL DEFAULT false;
