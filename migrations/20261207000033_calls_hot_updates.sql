-- A call event's update of its call record can be a HOT update (heap-only: no index entry
-- written), as long as no index names a column the event changes. Every event changes the
-- call's state, updated_at, event count and last event time, and most change its agents; before
-- this migration two indexes named them:
--   calls_live_idx          (updated_at) WHERE state NOT IN ('ended', 'abandoned')
--   calls_active_agents_idx gin (on_call_agents) WHERE state NOT IN ('ended', 'abandoned')
-- so every event wrote a new entry into each of the table's seven indexes.
--
-- A call is live exactly while ended_at is NULL: the call machine sets ended_at on ENDED and
-- ABANDONED, and only then, and a CHECK constraint now holds every row to it. The live index now tests that, and is keyed by when the call was
-- offered, which events do not change. An agent's current calls are found among the live calls
-- (a contact center has thousands at most), so the GIN index on the agents goes. An event's
-- update then touches indexed columns only when the call starts (insert) and when it ends
-- (ended_at); the events between are HOT. The free space HOT needs on each page is kept by a
-- fill factor of 80 (new pages; existing pages fill as before).
DROP INDEX calls_live_idx;
DROP INDEX calls_active_agents_idx;
CREATE INDEX calls_live_idx ON calls (offered_at) WHERE ended_at IS NULL;
ALTER TABLE calls SET (fillfactor = 80);
ALTER TABLE calls ADD CONSTRAINT calls_live_is_not_ended
    CHECK ((ended_at IS NULL) = (state NOT IN ('ended', 'abandoned')));
