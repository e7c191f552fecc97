-- What each request cost, in USD (exact decimals): the serving target's price (Pricing:Models, the provider's own, or
-- the built-in table) applied to its usage, cache reads and writes at their own prices. NULL when a target that spent
-- tokens has no price (never a made-up 0); 0 for a cache hit, whose cost_saved_usd is what the route's first target
-- would have charged. The daily rollup sums the cost and counts the requests it could not price.
ALTER TABLE completions ADD COLUMN cost_usd numeric(20,10), ADD COLUMN cost_saved_usd numeric(20,10);
ALTER TABLE usage_daily ADD COLUMN cost_usd numeric(20,10) NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_requests bigint NOT NULL DEFAULT 0;
