-- A counter that moves whenever anything the call path reads changes, so the
-- host can cache a resolved call (token, agent, grant, live version) and
-- still see every committed change on the very next call: each call reads
-- this one row and drops its cache when the number moved. Triggers keep it
-- current, so no write path can forget to bump it, whichever process (or
-- CLI run) writes.
CREATE TABLE call_generation (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    gen INTEGER NOT NULL
);
INSERT INTO call_generation (id, gen) VALUES (1, 0);

CREATE TRIGGER gen_agents_update AFTER UPDATE OF status, renew_by ON agents
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_agents_delete AFTER DELETE ON agents
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;

CREATE TRIGGER gen_tokens_update AFTER UPDATE ON access_tokens
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_tokens_delete AFTER DELETE ON access_tokens
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;

CREATE TRIGGER gen_grants_insert AFTER INSERT ON grants
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_grants_update AFTER UPDATE ON grants
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_grants_delete AFTER DELETE ON grants
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;

CREATE TRIGGER gen_deployments_insert AFTER INSERT ON deployments
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_deployments_update AFTER UPDATE ON deployments
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_deployments_delete AFTER DELETE ON deployments
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;

CREATE TRIGGER gen_versions_update AFTER UPDATE ON tool_versions
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
CREATE TRIGGER gen_versions_delete AFTER DELETE ON tool_versions
BEGIN UPDATE call_generation SET gen = gen + 1 WHERE id = 1; END;
