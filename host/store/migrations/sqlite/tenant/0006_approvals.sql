-- Held calls waiting for (or decided by) approvers. One row per hold; the row
-- is the request approvers see and the only ticket to run it. States move
-- only forward, each move one conditional UPDATE (see ARCHITECTURE.md,
-- "Approvals"):
--   pending -> approved | rejected | expired | cancelled
--   approved -> executing -> executed     (a hold before the call)
--   approved -> consumed                  (a hold inside a call)
--   approved | executing | pending -> aborted (found in flight at restart)
CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('call', 'import')),
    status         TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    agent          TEXT NOT NULL,
    tool           TEXT NOT NULL,
    version        TEXT NOT NULL,
    component      TEXT NOT NULL,
    action         TEXT NOT NULL,
    -- The call's input exactly as the agent sent it.
    input          TEXT NOT NULL,
    -- A hold inside a call: the import request (JSON); else NULL.
    import         TEXT,
    policy_version INTEGER NOT NULL,
    correlation    TEXT NOT NULL,
    invocation     TEXT NOT NULL,
    data_session   TEXT NOT NULL,
    rule           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    policies       TEXT NOT NULL,
    -- What the policy saw (CallFacts, JSON): approver checks read it.
    facts          TEXT NOT NULL,
    required       INTEGER NOT NULL CHECK (required >= 1),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    payload_sha256 TEXT NOT NULL,
    decided_at     INTEGER,
    finished_at    INTEGER,
    -- The executed call's report (JSON).
    result         TEXT
);
CREATE INDEX approvals_by_status ON approvals (status, expires_at);

CREATE TABLE approval_votes (
    approval_id  TEXT NOT NULL REFERENCES approvals (id),
    principal_id TEXT NOT NULL,
    principal    TEXT NOT NULL,
    vote         TEXT NOT NULL CHECK (vote IN ('approve', 'reject')),
    comment      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (approval_id, principal_id)
);
