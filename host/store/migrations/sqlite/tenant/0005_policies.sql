-- The tenant's Cedar policy sets, one row per uploaded version. The newest
-- version is in force; versions are never edited, so every decision's
-- recorded policy version can be read back. An empty text means "no policy
-- layer" (grants alone decide).
CREATE TABLE policies (
    version    INTEGER PRIMARY KEY,
    text       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- A new policy version changes what every call decides: move the call
-- generation so caches drop the old set on the next call.
CREATE TRIGGER gen_policies_insert AFTER INSERT ON policies
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_policies_update AFTER UPDATE ON policies
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_policies_delete AFTER DELETE ON policies
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
