-- Warden on PostgreSQL: every tenant in one database, isolated by the
-- database itself (see ARCHITECTURE.md, "PostgreSQL and several nodes").
--
-- * Every tenant-scoped table has a `tenant` column that defaults to the
--   transaction's `warden.tenant` setting, ENABLE and FORCE ROW LEVEL
--   SECURITY, and one policy whose USING and WITH CHECK both compare the
--   row's tenant to that setting. No setting (or an empty one) matches no
--   row: such a connection sees nothing and can write nothing.
-- * This migration runs as the tables' owner. Warden serves as a member of
--   `warden_app` (which must exist before this runs; see README), which owns
--   nothing, is granted only what the store uses (no DELETE anywhere, no
--   UPDATE on the append-only tables), and is refused by `warden serve` if it
--   is a superuser, has BYPASSRLS or owns a table.
-- * Keys carry the tenant, so foreign keys can never point into another
--   tenant's rows.

CREATE FUNCTION warden_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('warden.tenant', true), '') $$;

-- ---- control plane (not tenant data) ----------------------------------------

CREATE TABLE admin (
    id          BIGINT  PRIMARY KEY CHECK (id = 1),
    key_hash    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE tenants (
    name        TEXT    PRIMARY KEY,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- ---- tenant data ---------------------------------------------------------------

CREATE TABLE settings (
    tenant      TEXT    NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    changed_by  TEXT    NOT NULL,
    changed_at  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE principals (
    tenant      TEXT    NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    id          TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    roles       TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE api_keys (
    tenant       TEXT   NOT NULL DEFAULT warden_tenant(),
    key_hash     TEXT   NOT NULL,
    principal_id TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    PRIMARY KEY (tenant, key_hash),
    FOREIGN KEY (tenant, principal_id) REFERENCES principals (tenant, id)
);

CREATE TABLE agents (
    tenant            TEXT   NOT NULL DEFAULT warden_tenant(),
    id                TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    owner_id          TEXT   NOT NULL,
    purpose           TEXT   NOT NULL,
    status            TEXT   NOT NULL
                      CHECK (status IN ('draft', 'active', 'suspended', 'decommissioned')),
    renew_by          BIGINT NOT NULL,
    last_active_at    BIGINT,
    created_by        TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    status_changed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name),
    FOREIGN KEY (tenant, owner_id) REFERENCES principals (tenant, id)
);

CREATE TABLE agent_credentials (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant(),
    key_hash    TEXT   NOT NULL,
    agent_id    TEXT   NOT NULL,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (tenant, key_hash),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents (tenant, id)
);

CREATE TABLE access_tokens (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant(),
    key_hash    TEXT   NOT NULL,
    agent_id    TEXT   NOT NULL,
    tools       TEXT,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (tenant, key_hash),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents (tenant, id)
);

CREATE TABLE blobs (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    sha256      TEXT   NOT NULL,
    bytes       BYTEA  NOT NULL,
    PRIMARY KEY (tenant, sha256)
);

CREATE TABLE tool_versions (
    tenant       TEXT   NOT NULL DEFAULT warden_tenant(),
    tool         TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    sha256       TEXT   NOT NULL,
    manifest     TEXT   NOT NULL,
    published_by TEXT   NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, tool, version),
    FOREIGN KEY (tenant, sha256) REFERENCES blobs (tenant, sha256)
);

CREATE TABLE deployments (
    tenant       TEXT   NOT NULL DEFAULT warden_tenant(),
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tool         TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    kind         TEXT   NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    deployed_by  TEXT   NOT NULL,
    deployed_at  BIGINT NOT NULL,
    FOREIGN KEY (tenant, tool, version) REFERENCES tool_versions (tenant, tool, version)
);
CREATE INDEX deployments_by_tool ON deployments (tenant, tool, seq);

CREATE TABLE grants (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant(),
    id          TEXT   NOT NULL,
    agent_id    TEXT   NOT NULL,
    tool        TEXT   NOT NULL,
    spec        TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    revoked_by  TEXT,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, agent_id) REFERENCES agents (tenant, id)
);
CREATE UNIQUE INDEX grants_live ON grants (tenant, agent_id, tool) WHERE revoked_at IS NULL;

-- Append-only history of every governance change. `seq` is global, but a
-- tenant's writers hold the tenant's advisory lock until commit, so within a
-- tenant seq order is commit order (the audit cursor relies on it).
CREATE TABLE events (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    detail      TEXT   NOT NULL
);
CREATE INDEX events_by_tenant ON events (tenant, seq);

-- See the SQLite migration 0002: moves whenever anything the call path reads
-- changes. One row per tenant.
CREATE TABLE call_generation (
    tenant  TEXT   NOT NULL DEFAULT warden_tenant() PRIMARY KEY REFERENCES tenants (name),
    id      BIGINT NOT NULL DEFAULT 1 CHECK (id = 1),
    gen     BIGINT NOT NULL
);

CREATE FUNCTION warden_bump_generation() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE call_generation SET gen = gen + 1 WHERE tenant = warden_tenant();
    RETURN NULL;
END $$;

CREATE TABLE policies (
    tenant     TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    version    BIGINT NOT NULL,
    text       TEXT   NOT NULL,
    sha256     TEXT   NOT NULL,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, version)
);

CREATE TRIGGER gen_agents AFTER UPDATE OF status, renew_by OR DELETE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();
CREATE TRIGGER gen_tokens AFTER UPDATE OR DELETE ON access_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();
CREATE TRIGGER gen_grants AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();
CREATE TRIGGER gen_deployments AFTER INSERT OR UPDATE OR DELETE ON deployments
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();
CREATE TRIGGER gen_versions AFTER UPDATE OR DELETE ON tool_versions
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();
CREATE TRIGGER gen_policies AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_generation();

-- ---- audit trail (append-only) ------------------------------------------------

CREATE TABLE audit_entries (
    tenant  TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    seq     BIGINT NOT NULL,
    body    TEXT   NOT NULL,
    mac     TEXT   NOT NULL,
    cosign  TEXT,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_entries_invocation
    ON audit_entries (tenant, (body::jsonb ->> 'invocation'))
    WHERE (body::jsonb ->> 'invocation') IS NOT NULL;

CREATE TABLE audit_checkpoints (
    tenant  TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    size    BIGINT NOT NULL,
    note    TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant, size)
);

CREATE TABLE audit_payloads (
    tenant  TEXT   NOT NULL DEFAULT warden_tenant(),
    seq     BIGINT NOT NULL,
    input   TEXT,
    output  TEXT,
    journal TEXT,
    PRIMARY KEY (tenant, seq),
    FOREIGN KEY (tenant, seq) REFERENCES audit_entries (tenant, seq)
);

CREATE TABLE audit_cursor (
    tenant      TEXT   NOT NULL DEFAULT warden_tenant() PRIMARY KEY REFERENCES tenants (name),
    id          BIGINT NOT NULL DEFAULT 1 CHECK (id = 1),
    events_seq  BIGINT NOT NULL
);

CREATE FUNCTION warden_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER audit_payloads_append_only BEFORE UPDATE OR DELETE ON audit_payloads
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();

-- ---- approvals (see the SQLite migration 0006) --------------------------------

CREATE TABLE approvals (
    tenant         TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    id             TEXT   NOT NULL,
    kind           TEXT   NOT NULL CHECK (kind IN ('call', 'import')),
    status         TEXT   NOT NULL,
    agent_id       TEXT   NOT NULL,
    agent          TEXT   NOT NULL,
    tool           TEXT   NOT NULL,
    version        TEXT   NOT NULL,
    component      TEXT   NOT NULL,
    action         TEXT   NOT NULL,
    input          TEXT   NOT NULL,
    import         TEXT,
    policy_version BIGINT NOT NULL,
    correlation    TEXT   NOT NULL,
    invocation     TEXT   NOT NULL,
    data_session   TEXT   NOT NULL,
    rule           TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    policies       TEXT   NOT NULL,
    facts          TEXT   NOT NULL,
    required       BIGINT NOT NULL CHECK (required >= 1),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    payload_sha256 TEXT   NOT NULL,
    decided_at     BIGINT,
    finished_at    BIGINT,
    result         TEXT,
    -- The node whose process holds an in-flight hold (a call suspended
    -- inside on it, or an approved call being executed), and when that node
    -- last said it is alive. Another node aborts such a row only when the
    -- owner's heartbeat is stale.
    owner_node     TEXT,
    heartbeat_at   BIGINT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX approvals_by_status ON approvals (tenant, status, expires_at);
CREATE INDEX approvals_by_invocation ON approvals (tenant, invocation);

CREATE TABLE approval_votes (
    tenant       TEXT   NOT NULL DEFAULT warden_tenant(),
    approval_id  TEXT   NOT NULL,
    principal_id TEXT   NOT NULL,
    principal    TEXT   NOT NULL,
    vote         TEXT   NOT NULL CHECK (vote IN ('approve', 'reject')),
    comment      TEXT   NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (tenant, approval_id, principal_id),
    FOREIGN KEY (tenant, approval_id) REFERENCES approvals (tenant, id)
);

-- ---- guardrail counters shared by every node ----------------------------------
-- One row per (agent, tool, scope, window width, window bucket). `scope` is
-- an action name, `*writes` or `*fuel`.
CREATE TABLE usage_counters (
    tenant  TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    agent   TEXT   NOT NULL,
    tool    TEXT   NOT NULL,
    scope   TEXT   NOT NULL,
    width   BIGINT NOT NULL,
    bucket  BIGINT NOT NULL,
    used    BIGINT NOT NULL,
    PRIMARY KEY (tenant, agent, tool, scope, width, bucket)
);

-- ---- data-classification sessions shared by every node -------------------------
-- `tier` is the rank of the highest classification read (0 = public).
CREATE TABLE data_sessions (
    tenant   TEXT   NOT NULL DEFAULT warden_tenant() REFERENCES tenants (name),
    agent_id TEXT   NOT NULL,
    session  TEXT   NOT NULL,
    tier     BIGINT NOT NULL,
    calls    BIGINT NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, agent_id, session)
);

CREATE TABLE data_session_tools (
    tenant   TEXT   NOT NULL DEFAULT warden_tenant(),
    agent_id TEXT   NOT NULL,
    session  TEXT   NOT NULL,
    tool     TEXT   NOT NULL,
    PRIMARY KEY (tenant, agent_id, session, tool),
    FOREIGN KEY (tenant, agent_id, session) REFERENCES data_sessions (tenant, agent_id, session)
);

-- ---- row-level security on every tenant-scoped table -------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'settings', 'principals', 'api_keys', 'agents', 'agent_credentials',
        'access_tokens', 'blobs', 'tool_versions', 'deployments', 'grants',
        'events', 'call_generation', 'policies', 'audit_entries',
        'audit_checkpoints', 'audit_payloads', 'audit_cursor', 'approvals',
        'approval_votes', 'usage_counters', 'data_sessions', 'data_session_tools'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant = warden_tenant()) WITH CHECK (tenant = warden_tenant())', t);
    END LOOP;
END $$;

-- ---- what the application role may do -------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT SELECT ON _sqlx_migrations TO warden_app;
GRANT SELECT, INSERT ON admin, tenants TO warden_app;
GRANT SELECT, INSERT, UPDATE ON
    settings, api_keys, agents, agent_credentials, access_tokens, grants,
    call_generation, audit_cursor, approvals, usage_counters, data_sessions
    TO warden_app;
GRANT SELECT, INSERT ON
    principals, blobs, tool_versions, deployments, events, policies,
    audit_entries, audit_checkpoints, audit_payloads, approval_votes,
    data_session_tools
    TO warden_app;
GRANT EXECUTE ON FUNCTION warden_tenant() TO warden_app;
