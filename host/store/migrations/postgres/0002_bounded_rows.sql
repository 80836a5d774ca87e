-- Rows that grew without bound (ARCHITECTURE.md, Known gaps):
--
-- 1. Guardrail counters keep one row per (agent, tool, scope, window
--    width): a count in a newer window replaces the old one in place
--    (warden_store::usage), so the table holds one row per window kind
--    per active agent × tool × action, not one per minute elapsed. Only
--    the newest window of each kind is kept here: older ones can no
--    longer refuse or admit anything.
-- 2. Data sessions idle for a day are deleted by the nodes' sweep, as a
--    single process forgets them: the application role may DELETE those
--    two tables (it could already UPDATE them), and nothing else.
--
-- Runs as the owner, whom FORCE ROW LEVEL SECURITY also binds: the
-- clean-up below sees every tenant's rows only while FORCE is off, inside
-- this migration's transaction.
ALTER TABLE usage_counters NO FORCE ROW LEVEL SECURITY;
DELETE FROM usage_counters stale USING usage_counters newer
 WHERE newer.tenant = stale.tenant AND newer.agent = stale.agent
   AND newer.tool = stale.tool AND newer.scope = stale.scope
   AND newer.width = stale.width AND newer.bucket > stale.bucket;
ALTER TABLE usage_counters DROP CONSTRAINT usage_counters_pkey;
ALTER TABLE usage_counters ADD PRIMARY KEY (tenant, agent, tool, scope, width);
ALTER TABLE usage_counters FORCE ROW LEVEL SECURITY;

GRANT DELETE ON data_sessions, data_session_tools TO warden_app;
-- The sweep finds idle sessions by when they were last seen.
CREATE INDEX data_sessions_seen ON data_sessions (tenant, seen_at);
