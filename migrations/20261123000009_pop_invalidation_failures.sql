-- A writer that could not apply its invalidations to Redis marks them failed, so that other
-- instances stop trusting the cache at their next relay tick. Rows that are neither failed nor
-- older than a few seconds are a writer's normal path in progress (applied within milliseconds
-- after its commit) and do not make anyone distrust the cache.
ALTER TABLE pop_invalidations ADD COLUMN failed boolean NOT NULL DEFAULT false;
