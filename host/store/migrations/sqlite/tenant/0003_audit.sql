-- The tenant's audit trail (see warden-audit). Append-only here too: the
-- triggers below refuse UPDATE and DELETE on every audit table, so even a
-- bug in Warden cannot rewrite history through this database connection.

-- Sealed entries: canonical bytes, HMAC, and (rotations only) co-seals.
CREATE TABLE audit_entries (
    seq     INTEGER PRIMARY KEY,
    body    TEXT    NOT NULL,
    mac     TEXT    NOT NULL,
    cosign  TEXT
);

-- Signed checkpoints (C2SP signed notes), one per tree size.
CREATE TABLE audit_checkpoints (
    size    INTEGER PRIMARY KEY,
    note    TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL
);

-- Full call payloads, digested in the entries, readable by viewers.
CREATE TABLE audit_payloads (
    seq     INTEGER PRIMARY KEY REFERENCES audit_entries (seq),
    input   TEXT,
    output  TEXT
);

-- How far the governance history (events) has been chained.
CREATE TABLE audit_cursor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    events_seq  INTEGER NOT NULL
);
INSERT INTO audit_cursor (id, events_seq) VALUES (1, 0);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_payloads_no_update BEFORE UPDATE ON audit_payloads
BEGIN SELECT RAISE(ABORT, 'audit payloads are append-only'); END;
CREATE TRIGGER audit_payloads_no_delete BEFORE DELETE ON audit_payloads
BEGIN SELECT RAISE(ABORT, 'audit payloads are append-only'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the governance history is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the governance history is append-only'); END;
