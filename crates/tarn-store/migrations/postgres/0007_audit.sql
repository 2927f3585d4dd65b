-- The audit log: see migrations/sqlite/0016_audit.sql.
CREATE TABLE audit_events (
    id         TEXT COLLATE "C" PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    actor_kind TEXT COLLATE "C" NOT NULL,
    address    TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    workspace  TEXT COLLATE "C" NOT NULL,
    status     BIGINT NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (at);
