-- One tenant's governance data. Every table here belongs to exactly one tenant:
-- the tenant is the database file, so no row carries (or can forget) a tenant id.
-- Times are Unix seconds. Secrets are never stored: only SHA-256 hashes of them.

CREATE TABLE settings (
    key         TEXT    PRIMARY KEY,
    value       TEXT    NOT NULL,
    changed_by  TEXT    NOT NULL,
    changed_at  INTEGER NOT NULL
);

CREATE TABLE principals (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    roles       TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash     TEXT    PRIMARY KEY,
    principal_id TEXT    NOT NULL REFERENCES principals (id),
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE agents (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE,
    owner_id          TEXT    NOT NULL REFERENCES principals (id),
    purpose           TEXT    NOT NULL,
    status            TEXT    NOT NULL
                      CHECK (status IN ('draft', 'active', 'suspended', 'decommissioned')),
    renew_by          INTEGER NOT NULL,
    last_active_at    INTEGER,
    created_by        TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    status_changed_at INTEGER NOT NULL
);

CREATE TABLE agent_credentials (
    key_hash    TEXT    PRIMARY KEY,
    agent_id    TEXT    NOT NULL REFERENCES agents (id),
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE access_tokens (
    key_hash    TEXT    PRIMARY KEY,
    agent_id    TEXT    NOT NULL REFERENCES agents (id),
    tools       TEXT,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE blobs (
    sha256      TEXT    PRIMARY KEY,
    bytes       BLOB    NOT NULL
);

CREATE TABLE tool_versions (
    tool         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    sha256       TEXT    NOT NULL REFERENCES blobs (sha256),
    manifest     TEXT    NOT NULL,
    published_by TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (tool, version)
);

CREATE TABLE deployments (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tool         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    deployed_by  TEXT    NOT NULL,
    deployed_at  INTEGER NOT NULL,
    FOREIGN KEY (tool, version) REFERENCES tool_versions (tool, version)
);

CREATE TABLE grants (
    id          TEXT    PRIMARY KEY,
    agent_id    TEXT    NOT NULL REFERENCES agents (id),
    tool        TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    revoked_by  TEXT
);

-- At most one live grant per agent and tool: adding a grant replaces the old one
-- in the same transaction.
CREATE UNIQUE INDEX grants_live ON grants (agent_id, tool) WHERE revoked_at IS NULL;

-- Append-only history of every governance change.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    detail      TEXT    NOT NULL
);
