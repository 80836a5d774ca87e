-- The control database: who may create tenants, and which tenants exist.
-- Tenant data never lives here; each tenant has its own database file.

CREATE TABLE admin (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key_hash    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE tenants (
    name        TEXT    PRIMARY KEY,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
