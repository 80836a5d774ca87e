-- Several processes: which node holds an in-flight hold and when it last
-- said it is alive (see the PostgreSQL migration and ARCHITECTURE.md,
-- "PostgreSQL and several nodes"); guardrail counters kept in the
-- database, one row per (agent, tool, scope, window width, bucket); and
-- data-classification sessions (the tier as a rank, 0 = public). The
-- service uses the last two on PostgreSQL; SQLite has them so the store
-- behaves the same on both.
ALTER TABLE approvals ADD COLUMN owner_node TEXT;
ALTER TABLE approvals ADD COLUMN heartbeat_at INTEGER;

CREATE TABLE usage_counters (
    agent   TEXT    NOT NULL,
    tool    TEXT    NOT NULL,
    scope   TEXT    NOT NULL,
    width   INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (agent, tool, scope, width, bucket)
);

CREATE TABLE data_sessions (
    agent_id TEXT    NOT NULL,
    session  TEXT    NOT NULL,
    tier     INTEGER NOT NULL,
    calls    INTEGER NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, session)
);

CREATE TABLE data_session_tools (
    agent_id TEXT NOT NULL,
    session  TEXT NOT NULL,
    tool     TEXT NOT NULL,
    PRIMARY KEY (agent_id, session, tool)
);
