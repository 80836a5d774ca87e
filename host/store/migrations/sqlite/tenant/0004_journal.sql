-- Trace replay: the import journal of a finished invocation is kept with its
-- payloads (its digest is in the signed entry), and invocations are found by id.
ALTER TABLE audit_payloads ADD COLUMN journal TEXT;
CREATE INDEX audit_entries_invocation
    ON audit_entries (json_extract(body, '$.invocation'))
    WHERE json_extract(body, '$.invocation') IS NOT NULL;
