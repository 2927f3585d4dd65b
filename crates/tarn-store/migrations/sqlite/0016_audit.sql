-- The audit log: every state-changing call (API, MLflow, studio forms) and every read of
-- secrets — who (`actor`, and whether a person, a service principal or a job), when (ms since
-- the epoch), from which address, what (method and path: the resource and the action; never a
-- body, so never a secret value), in which workspace, and the outcome (HTTP status).
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    address    TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    status     INTEGER NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (at);
