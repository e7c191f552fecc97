-- The client's hints the serving provider had no equivalent for and that the gateway dropped (comma-separated, e.g.
-- 'thinking,context_management'): an Anthropic Messages request served by an OpenAI-compatible model. NULL when none.
ALTER TABLE completions ADD COLUMN dropped_hints text;
