-- Several processes: which node holds an in-flight hold and when it last
-- said it is alive (see the PostgreSQL migration and ARCHITECTURE.md,
-- "PostgreSQL and several nodes"); and guardrail counters kept in the
-- database, one row per (agent, tool, scope, window width, bucket).
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
