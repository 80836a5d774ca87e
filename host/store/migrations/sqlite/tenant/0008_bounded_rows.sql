-- Guardrail counters keep one row per (agent, tool, scope, window width):
-- a count in a newer window replaces the old one in place (see the
-- PostgreSQL migration 0002). SQLite cannot change a primary key, so the
-- table is rebuilt with the newest window of each kind (SQLite takes the
-- bare `used` from the row holding MAX(bucket)).
CREATE TABLE usage_counters_new (
    agent   TEXT    NOT NULL,
    tool    TEXT    NOT NULL,
    scope   TEXT    NOT NULL,
    width   INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (agent, tool, scope, width)
);
INSERT INTO usage_counters_new (agent, tool, scope, width, bucket, used)
    SELECT agent, tool, scope, width, MAX(bucket), used
      FROM usage_counters GROUP BY agent, tool, scope, width;
DROP TABLE usage_counters;
ALTER TABLE usage_counters_new RENAME TO usage_counters;
